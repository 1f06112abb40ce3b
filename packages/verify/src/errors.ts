import { TesseraError, type VerificationErrorCode } from '@tessera/core';

/**
 * Why a token was refused. Stable: relying parties branch on these. Every code is documented, with
 * what to do about it, in docs/verify.md.
 */
export type VerificationCode = VerificationErrorCode;

/** Codes that are the relying party's (or the issuer's) problem, not the token's: HTTP 503. */
const UNAVAILABLE: ReadonlySet<VerificationCode> = new Set([
  'ERR_DISCOVERY_FAILED',
  'ERR_JWKS_UNAVAILABLE',
  'ERR_INTROSPECTION_FAILED',
  'ERR_DPOP_REPLAY_CACHE_FULL',
]);

/** HTTP status a middleware answers with for a code: 403 for policy, 503 when the issuer cannot be reached, else 401. */
export function statusForCode(code: VerificationCode): 401 | 403 | 503 {
  if (code === 'ERR_POLICY_DENIED') return 403;
  if (UNAVAILABLE.has(code)) return 503;
  return 401;
}

/** Options for {@link VerificationError}. */
export interface VerificationErrorOptions {
  /** The claim (or header member) that failed, when it is one. */
  claim?: string;
  /** The policy rule that decided a denial. */
  rule?: string;
  cause?: unknown;
}

/**
 * Thrown by a verifier. `code` (and its alias `reason`) says which check failed; `claim` names the
 * claim when it is one; the message says what was expected and what was found, e.g.
 * `ERR_AUDIENCE_MISMATCH: token aud "sts.amazon.com", this service expects "sts.amazonaws.com"`.
 * Messages never contain the token itself.
 */
export class VerificationError extends TesseraError {
  declare readonly code: VerificationCode;
  /** Same as `code`; kept for callers written against the first verifier. */
  readonly reason: VerificationCode;
  /** The claim (or header member) that failed, when it is one. */
  readonly claim: string | undefined;
  /** The policy rule that decided, for `ERR_POLICY_DENIED`. */
  readonly rule: string | undefined;
  constructor(code: VerificationCode, message: string, options: VerificationErrorOptions = {}) {
    super(code, `${code}: ${message}`, {
      status: statusForCode(code),
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      ...(options.claim || options.rule
        ? { details: { ...(options.claim ? { claim: options.claim } : {}), ...(options.rule ? { rule: options.rule } : {}) } }
        : {}),
    });
    this.reason = code;
    this.claim = options.claim;
    this.rule = options.rule;
  }
}

/** True when `e` is a {@link VerificationError}. */
export function isVerificationError(e: unknown): e is VerificationError {
  return e instanceof VerificationError;
}
