export { CEL_MAX_LENGTH, CelError, type CompileCelOptions, type CompiledCel, compileCel, glob } from './cel.js';
export { createDpopChecker, type DpopChecker, type DpopOptions, type DpopRequest, htuOf } from './dpop.js';
export {
  isVerificationError,
  statusForCode,
  type VerificationCode,
  VerificationError,
  type VerificationErrorOptions,
} from './errors.js';
export * from './explain/index.js';
export { createIntrospector, type IntrospectOptions, type Introspector } from './introspect.js';
export { createJwksCache, type JwksCache, type JwksCacheOptions, type JwksCacheStats, type JwksOptions, jwkFitsAlg } from './jwks.js';
export type { FetchLike } from './lib/http.js';
export { type AuthRequest, type AuthResult, authenticate, type MiddlewareOptions } from './middleware/common.js';
export { type CompiledPolicy, compilePolicy, POLICY_VARIABLES, type PolicyOptions, type PolicyRule } from './policy.js';
export {
  ASYMMETRIC_ALGORITHMS,
  createVerifier,
  DEFAULT_MAX_TOKEN_BYTES,
  MAX_CLOCK_TOLERANCE_SECONDS,
  MAX_KID_LENGTH,
  type VerifiedClaims,
  type Verifier,
  type VerifierAlgorithm,
  type VerifierOptions,
  type VerifyOptions,
} from './verifier.js';
