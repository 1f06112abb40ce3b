import { TesseraError } from '@tessera/core';

/** Why a token was refused. Stable: relying parties branch on these. */
export type VerificationCode =
  | 'ERR_TOKEN_MALFORMED'
  | 'ERR_ALG_NOT_ALLOWED'
  | 'ERR_TYP_MISMATCH'
  | 'ERR_KEY_NOT_FOUND'
  | 'ERR_SIGNATURE_INVALID'
  | 'ERR_ISSUER_MISMATCH'
  | 'ERR_AUDIENCE_MISMATCH'
  | 'ERR_TOKEN_EXPIRED'
  | 'ERR_TOKEN_NOT_YET_VALID'
  | 'ERR_CLAIM_MISSING'
  | 'ERR_DISCOVERY_FAILED';

/** Thrown by a verifier; `code` says which check failed, `claim` which claim when it is one. */
export class VerificationError extends TesseraError {
  readonly reason: VerificationCode;
  readonly claim: string | undefined;
  constructor(reason: VerificationCode, message: string, options: { claim?: string; cause?: unknown } = {}) {
    super('ERR_UNAUTHENTICATED', `${reason}: ${message}`, { status: 401, ...(options.cause ? { cause: options.cause } : {}) });
    this.reason = reason;
    this.claim = options.claim;
  }
}
