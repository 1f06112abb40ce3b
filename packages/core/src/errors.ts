/**
 * Every stable error code Tessera can produce. Codes never change meaning once released;
 * callers (and tests) branch on them, never on message text.
 */
export type ErrorCode =
  // generic input / lookup
  | 'ERR_VALIDATION'
  | 'ERR_NOT_FOUND'
  | 'ERR_CONFLICT'
  | 'ERR_INVALID_DURATION'
  | 'ERR_INVALID_SCHEDULE'
  | 'ERR_CONFIG'
  | 'ERR_ENTRYPOINT'
  | 'ERR_INVALID_PARAMETERS'
  // orchestration
  | 'ERR_ILLEGAL_TRANSITION'
  | 'ERR_UNKNOWN_POOL'
  | 'ERR_UNKNOWN_DEPLOYMENT'
  | 'ERR_RUN_NOT_FOUND'
  | 'ERR_TASK_FAILED'
  | 'ERR_TIMEOUT'
  | 'ERR_CANCELLED'
  | 'ERR_SERVER_UNREACHABLE'
  | 'ERR_HTTP'
  // identity
  | 'ERR_UNAUTHENTICATED'
  | 'ERR_FORBIDDEN'
  | 'ERR_CREDENTIAL_INVALID'
  | 'ERR_CREDENTIAL_REVOKED'
  | 'ERR_AUDIENCE_REQUIRED'
  | 'ERR_AUDIENCE_NOT_ALLOWED'
  | 'ERR_NO_IDENTITY'
  | 'ERR_RATE_LIMITED'
  | 'ERR_KEY_PENDING'
  | 'ERR_IDENTITY_REVOKED'
  | 'ERR_DPOP_PROOF_INVALID'
  // people's login: a login that failed (state, nonce, PKCE, the IdP refused) and a refused cross-site request
  | 'ERR_LOGIN_FAILED'
  | 'ERR_CSRF'
  // machines and workers (issue #5): worker join tokens, RFC 7523 assertion replay, an unknown trust policy
  | 'ERR_JOIN_TOKEN_INVALID'
  | 'ERR_JOIN_TOKEN_EXPIRED'
  | 'ERR_JOIN_TOKEN_USED'
  | 'ERR_ASSERTION_REPLAYED'
  // signing keys: a key file readable by others, or unusable
  | 'ERR_KEY_FILE_INSECURE'
  | 'ERR_KEY_FILE_INVALID'
  // SDK: a run-only API (getRunContext) was called outside a flow run
  | 'ERR_NO_RUN_CONTEXT'
  // @tessera/verify: why a relying party refused a token (see docs/verify.md)
  | VerificationErrorCode
  // @tessera/verify: a CEL expression that does not compile, or fails while evaluating
  | 'ERR_CEL_INVALID'
  | 'ERR_CEL_EVALUATION'
  | 'ERR_INTERNAL';

/**
 * Why `@tessera/verify` refused a token. Stable: relying parties branch on these.
 * Each one is documented, with what to do about it, in docs/verify.md.
 */
export type VerificationErrorCode =
  | 'ERR_TOKEN_MISSING'
  | 'ERR_TOKEN_MALFORMED'
  | 'ERR_TOKEN_TOO_LARGE'
  | 'ERR_DUPLICATE_MEMBER'
  | 'ERR_ALG_NOT_ALLOWED'
  | 'ERR_CRIT_UNSUPPORTED'
  | 'ERR_TYP_MISMATCH'
  | 'ERR_KID_INVALID'
  | 'ERR_KEY_NOT_FOUND'
  | 'ERR_SIGNATURE_INVALID'
  | 'ERR_ISSUER_MISMATCH'
  | 'ERR_AUDIENCE_MISMATCH'
  | 'ERR_TOKEN_EXPIRED'
  | 'ERR_TOKEN_NOT_YET_VALID'
  | 'ERR_IAT_IN_FUTURE'
  | 'ERR_CLAIM_MISSING'
  | 'ERR_CLAIM_INVALID'
  | 'ERR_DPOP_REQUIRED'
  | 'ERR_DPOP_INVALID'
  | 'ERR_DPOP_REPLAY'
  | 'ERR_DPOP_REPLAY_CACHE_FULL'
  | 'ERR_TOKEN_INACTIVE'
  | 'ERR_POLICY_DENIED'
  | 'ERR_DISCOVERY_FAILED'
  | 'ERR_JWKS_UNAVAILABLE'
  | 'ERR_INTROSPECTION_FAILED';

/** Options for {@link TesseraError}. */
export interface TesseraErrorOptions {
  cause?: unknown;
  /** HTTP status the server answers with; defaults from the code. */
  status?: number;
  /** Structured details, e.g. the field that failed validation. Never secrets. */
  details?: Record<string, unknown>;
}

const DEFAULT_STATUS: Partial<Record<ErrorCode, number>> = {
  ERR_VALIDATION: 400,
  ERR_INVALID_DURATION: 400,
  ERR_INVALID_SCHEDULE: 400,
  ERR_CONFIG: 400,
  ERR_ENTRYPOINT: 400,
  ERR_INVALID_PARAMETERS: 422,
  ERR_NOT_FOUND: 404,
  ERR_UNKNOWN_POOL: 404,
  ERR_UNKNOWN_DEPLOYMENT: 404,
  ERR_RUN_NOT_FOUND: 404,
  ERR_CONFLICT: 409,
  ERR_ILLEGAL_TRANSITION: 409,
  ERR_UNAUTHENTICATED: 401,
  ERR_CREDENTIAL_INVALID: 401,
  ERR_CREDENTIAL_REVOKED: 401,
  ERR_FORBIDDEN: 403,
  ERR_POLICY_DENIED: 403,
  ERR_CEL_INVALID: 400,
  ERR_AUDIENCE_REQUIRED: 400,
  ERR_AUDIENCE_NOT_ALLOWED: 403,
  ERR_NO_IDENTITY: 403,
  ERR_RATE_LIMITED: 429,
  ERR_KEY_PENDING: 503,
  ERR_IDENTITY_REVOKED: 403,
  ERR_DPOP_PROOF_INVALID: 400,
  ERR_LOGIN_FAILED: 400,
  ERR_CSRF: 403,
  ERR_JOIN_TOKEN_INVALID: 401,
  ERR_JOIN_TOKEN_EXPIRED: 401,
  ERR_JOIN_TOKEN_USED: 401,
  ERR_ASSERTION_REPLAYED: 401,
  ERR_SERVER_UNREACHABLE: 503,
  ERR_INTERNAL: 500,
};

/**
 * The base of every error Tessera throws on purpose. `code` is stable; `message` says what was
 * expected, what was found and what to do.
 */
export class TesseraError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: TesseraErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = options.status ?? DEFAULT_STATUS[code] ?? 500;
    this.details = options.details;
  }

  /** The JSON body the HTTP API answers with. */
  toJSON(): ApiErrorBody {
    return {
      error: this.name,
      code: this.code,
      message: this.message,
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

/** Thrown when a request or config fails validation; `issues` name every offending field. */
export class ValidationError extends TesseraError {
  readonly issues: ValidationIssue[];
  constructor(message: string, issues: ValidationIssue[], code: ErrorCode = 'ERR_VALIDATION') {
    super(code, message, { details: { issues } });
    this.issues = issues;
  }
}

/** One failed field: a dotted path (`deployments[1].schedule.cron`) and what is wrong with it. */
export interface ValidationIssue {
  path: string;
  message: string;
}

/** Thrown by the server (and re-thrown by clients) when a state transition is not allowed. */
export class IllegalTransitionError extends TesseraError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('ERR_ILLEGAL_TRANSITION', message, details ? { details } : {});
  }
}

/** The JSON shape of every HTTP error the API returns. */
export interface ApiErrorBody {
  error: string;
  code: ErrorCode | string;
  message: string;
  details?: Record<string, unknown>;
}

/** True when `e` is a TesseraError (also across package copies, by duck typing on `code`). */
export function isTesseraError(e: unknown): e is TesseraError {
  return e instanceof TesseraError;
}

/** Rebuilds a TesseraError from an API error body received over HTTP. */
export function errorFromApiBody(status: number, body: unknown): TesseraError {
  if (body && typeof body === 'object' && 'code' in body && 'message' in body) {
    const b = body as ApiErrorBody;
    const err = new TesseraError(b.code as ErrorCode, b.message, {
      status,
      ...(b.details ? { details: b.details } : {}),
    });
    return err;
  }
  return new TesseraError('ERR_HTTP', `server answered HTTP ${status}`, { status });
}
