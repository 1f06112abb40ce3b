import type { RoleGrantInfo } from './auth-api.js';

/**
 * Wire types of people's login (issue #5): the browser endpoints under `/auth`, and those the CLI
 * uses for `tessera login` (loopback redirect or device grant). See docs/login.md.
 */

/** Prefix of a browser session cookie's value, so scanners and redaction can spot one. */
export const SESSION_COOKIE_PREFIX = 'tss_';
/** Prefix of the login-in-progress cookie's value. */
export const LOGIN_COOKIE_PREFIX = 'tsl_';
/** Prefix of a CLI refresh token. */
export const REFRESH_TOKEN_PREFIX = 'tsrt_';
/** Prefix of the one-time code the server hands the CLI's loopback listener. */
export const LOGIN_CODE_PREFIX = 'tslc_';
/** Prefix of the handle the CLI polls with during a device login. */
export const DEVICE_HANDLE_PREFIX = 'tsdv_';

/** The CLI's grant type for a device login (RFC 8628 §3.4). */
export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/** A configured identity provider, as `GET /auth/providers` lists it. */
export interface LoginProviderInfo {
  name: string;
  issuer: string;
  /** The provider offers the device authorization grant (RFC 8628): `tessera login --device` works. */
  deviceFlow: boolean | null;
}

/** Answer of `GET /auth/providers`. */
export interface LoginProvidersResponse {
  /** No provider is configured: callers on loopback are the local admin. */
  localMode: boolean;
  providers: LoginProviderInfo[];
}

/** Answer of `GET /auth/me`: who the request's credential says you are. */
export interface WhoAmIResponse {
  kind: string;
  /** Stable id, e.g. `corp:248289761001` for a person (provider name and the IdP's `sub`). */
  id: string;
  /** For people: email (or username) at the provider. */
  label: string;
  provider?: string;
  roles: RoleGrantInfo[];
  session?: { id: string; kind: 'browser' | 'cli'; createdAt: string; expiresAt: string };
  /**
   * Browser sessions: send it as the `X-CSRF-Token` header with every POST, PUT, PATCH and DELETE
   * made with the session cookie.
   */
  csrfToken?: string;
}

/**
 * Body of `POST /auth/cli/token` (JSON or form-encoded, RFC 6749 names): redeem the loopback code
 * (`authorization_code` + `code_verifier` + `redirect_uri`), refresh (`refresh_token`), or poll a
 * device login (`urn:ietf:params:oauth:grant-type:device_code` + `device_code`).
 */
export interface CliTokenRequest {
  grant_type: string;
  code?: string;
  code_verifier?: string;
  redirect_uri?: string;
  refresh_token?: string;
  device_code?: string;
}

/** Answer of `POST /auth/cli/token`: a short-lived Tessera access token and a rotating refresh token. */
export interface CliTokenResponse {
  access_token: string;
  token_type: 'Bearer';
  /** Seconds. */
  expires_in: number;
  /** Single use: each refresh returns a new one; presenting a used one again ends the session. */
  refresh_token: string;
  /** Seconds until the session ends and `tessera login` is needed again. */
  refresh_expires_in: number;
  person: { id: string; label: string; provider: string; roles: RoleGrantInfo[] };
}

/** Answer of `POST /auth/cli/device`: what to show the person, and the handle to poll with. */
export interface DeviceLoginResponse {
  /** Tessera's handle (not the IdP's device code): poll `POST /auth/cli/token` with it. */
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete?: string;
  /** Seconds. */
  expires_in: number;
  /** Seconds between polls. */
  interval: number;
}
