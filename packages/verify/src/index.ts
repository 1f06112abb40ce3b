export { type VerificationCode, VerificationError } from './errors.js';
export { createVerifier, type Verifier, type VerifierOptions } from './verifier.js';
