import { RUN_CREDENTIAL_PREFIX } from './claims.js';

const JWT_RE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g;
const CRED_RE = new RegExp(`${RUN_CREDENTIAL_PREFIX}[A-Za-z0-9_-]{16,}`, 'g');

/**
 * Masks anything that looks like a JWT or a run credential, keeping the last 4 characters so a
 * person can still tell two tokens apart. Applied to every log line before it is stored or shown.
 */
export function redactSecrets(text: string): string {
  return text.replace(JWT_RE, (t) => `[redacted JWT …${t.slice(-4)}]`).replace(CRED_RE, (t) => `[redacted credential …${t.slice(-4)}]`);
}
