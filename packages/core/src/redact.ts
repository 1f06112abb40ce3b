import { JOIN_TOKEN_PREFIX } from './auth-api.js';
import { RUN_CREDENTIAL_PREFIX } from './claims.js';
import { DEVICE_HANDLE_PREFIX, LOGIN_CODE_PREFIX, LOGIN_COOKIE_PREFIX, REFRESH_TOKEN_PREFIX, SESSION_COOKIE_PREFIX } from './login-api.js';

// Each match may only start where a token can (not inside a run of token characters): otherwise a
// long run of `eyJ…` or `tsr_tsr_…` is scanned again from every position, quadratic time that a log line
// or a URL could use to stall the server.
const JWT_RE = /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g;
const CRED_PREFIXES = [
  RUN_CREDENTIAL_PREFIX,
  JOIN_TOKEN_PREFIX,
  SESSION_COOKIE_PREFIX,
  LOGIN_COOKIE_PREFIX,
  REFRESH_TOKEN_PREFIX,
  LOGIN_CODE_PREFIX,
  DEVICE_HANDLE_PREFIX,
];
const CRED_RE = new RegExp(`(?<![A-Za-z0-9])(?:${CRED_PREFIXES.join('|')})[A-Za-z0-9_-]{16,}`, 'g');

/**
 * Masks anything that looks like a JWT, a run credential or a worker join token, keeping the last 4 characters so a
 * person can still tell two tokens apart. Applied to every log line before it is stored or shown.
 */
export function redactSecrets(text: string): string {
  return text.replace(JWT_RE, (t) => `[redacted JWT …${t.slice(-4)}]`).replace(CRED_RE, (t) => `[redacted credential …${t.slice(-4)}]`);
}

/**
 * `text` masked ({@link redactSecrets}) and cut to `max` characters: masked before it is cut, so a token
 * straddling the cut is masked whole instead of leaving its first characters in clear. Only twice
 * `max` is scanned, however long the text.
 */
export function redactAndCut(text: string, max: number): string {
  return redactSecrets(text.length > max ? text.slice(0, 2 * max) : text).slice(0, max);
}

/**
 * A URL (or what was meant as one) safe to quote in an error: any `user:password@` part is masked,
 * with or without a scheme (`admin:s3cret@host` parses as the scheme `admin:`).
 */
export function withoutUserinfo(value: string): string {
  return value.replace(/^((?:[a-z][a-z0-9+.-]*:)?\/\/)?[^/?#@]*@/i, '$1***@');
}
