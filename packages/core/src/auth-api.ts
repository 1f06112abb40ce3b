import type { StateCause } from './states.js';

/**
 * Wire types of the auth API (issue #5): trust policies, workers' identities and join tokens, the
 * audit log, and the OAuth token endpoint. See docs/security.md.
 */

/** A role, from least to most powerful; each includes the ones before. */
export type RoleName = 'viewer' | 'operator' | 'developer' | 'admin';

/** A role, optionally confined to one workspace. */
export interface RoleGrantInfo {
  role: RoleName;
  workspace?: string;
}

/** Prefix of every worker join token, so scanners and redaction can spot one. */
export const JOIN_TOKEN_PREFIX = 'tsj_';

/** RFC 8693 grant type. */
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
/** RFC 7523 grant type. */
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** RFC 8693 §3 token type of a JWT (a platform's OIDC token). */
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
/** RFC 8693 §3 token type of an access token. */
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

/** Body of `PUT /api/trust-policies/:name`. */
export interface PutTrustPolicyRequest {
  /** The external issuer, exactly as its tokens' `iss` (its discovery document is fetched). */
  issuer: string;
  /** The audience the external token must carry (`aud`). */
  audience: string;
  /** A glob over the token's `sub` (`*` any run of characters, `?` one). */
  subject?: string | null;
  /** A CEL condition over `claims`, e.g. `claims.repository == "acme/etl" && claims.ref == "refs/heads/main"`. */
  condition?: string | null;
  /** What the token gets: a role, or `worker` (a federated worker). */
  role: RoleName | 'worker';
  /** Confine the role to one workspace. */
  workspace?: string | null;
  /** For `role: worker`: the only work pool it may poll. */
  pool?: string | null;
  description?: string | null;
}

/** A trust policy as the API shows it. */
export interface TrustPolicy {
  id: string;
  name: string;
  issuer: string;
  audience: string;
  subject: string | null;
  condition: string | null;
  role: RoleName | 'worker';
  workspace: string | null;
  pool: string | null;
  description: string | null;
  version: number;
  createdAt: string;
  createdBy: StateCause;
  updatedAt: string;
  updatedBy: StateCause;
}

/** Body of `POST /api/workers/join-tokens`. */
export interface CreateJoinTokenRequest {
  /** The only pool the worker may poll. */
  pool?: string;
  /** The worker's name (else the name it gives when it joins). */
  name?: string;
  /** How long the token may be used, `number` ms or `'10m'`; at most 1 h. @default '10m' */
  ttl?: number | string;
}

/** A join token, shown once. */
export interface CreateJoinTokenResponse {
  id: string;
  /** Secret: give it to one worker. Single use. */
  token: string;
  pool: string | null;
  expiresAt: string;
}

/** Body of `POST /api/workers/join`: a join token and the public half of a key pair the worker generated. */
export interface JoinWorkerRequest {
  joinToken: string;
  name: string;
  /** Public JWK (EC P-256 or Ed25519 or RSA ≥ 2048); the private half never leaves the worker. */
  publicKey: Record<string, unknown>;
}

/** Answer of `POST /api/workers/join`. */
export interface JoinWorkerResponse {
  workerId: string;
  name: string;
  pool: string | null;
  /** Where to send RFC 7523 assertions (`aud` of the assertion). */
  tokenEndpoint: string;
}

/** A worker's identity as the API shows it. */
export interface WorkerIdentity {
  id: string;
  name: string;
  pool: string | null;
  method: 'join-token' | 'federation';
  /** For federated workers: the trust policy and the external `sub`. */
  policy: string | null;
  externalSubject: string | null;
  jkt: string | null;
  createdAt: string;
  createdBy: StateCause;
  lastSeenAt: string | null;
  revokedAt: string | null;
  revokedBy: StateCause | null;
}

/** One security event. Never holds a token or secret. */
export interface AuditEvent {
  id: number;
  at: string;
  /** `kind:id` of who acted (`anonymous` when nobody could be identified). */
  principal: string;
  principalKind: string;
  action: string;
  target: string | null;
  result: 'success' | 'failure' | 'denied';
  detail: Record<string, unknown> | null;
}

/** RFC 6749 §5.1 answer of the token endpoint (plus RFC 8693's `issued_token_type`). */
export interface OAuthTokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  issued_token_type?: string;
  /** Tessera: who the token says you are (kind, label, grants). */
  principal?: { kind: string; id: string; label: string; grants?: RoleGrantInfo[]; pool?: string };
}

/** RFC 6749 §5.2 error answer, plus Tessera's stable `code` and `message`. */
export interface OAuthErrorResponse {
  error:
    | 'invalid_request'
    | 'invalid_client'
    | 'invalid_grant'
    | 'unauthorized_client'
    | 'unsupported_grant_type'
    | 'invalid_target'
    | 'server_error';
  error_description: string;
  code: string;
  message: string;
}
