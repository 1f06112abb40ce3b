/**
 * `explain`, `lint` and `generate`: simulate how AWS, GCP, Azure, Vault or a plain OIDC relying
 * party judges a Tessera token, say what in their configuration lets others in, and write
 * configurations that trust exactly one deployment.
 * @packageDocumentation
 */
export {
  AWS_ALGORITHMS,
  AWS_OIDC_CONDITION_CLAIMS,
  AWS_STS_AUDIENCE,
  type AwsRelyingParty,
  type AwsStatement,
  awsProviderPath,
  explainAws,
  parseAwsConfig,
  parseAwsOperator,
} from './aws.js';
export {
  AZURE_AUDIENCE,
  AZURE_MAX_CREDENTIALS,
  type AzureCredential,
  type AzureRelyingParty,
  explainAzure,
  parseAzureConfig,
} from './azure.js';
export { detectTarget, explainToken, parseTrustConfig, type TrustConfig } from './detect.js';
export { type ExpectedRunTokenOptions, expectedRunToken } from './expected-claims.js';
export { explainGcp, GCP_LIMITS, type GcpMappedAttributes, type GcpRelyingParty, gcpDefaultAudiences, parseGcpConfig } from './gcp.js';
export {
  type GeneratedTrust,
  type GenerateTrustOptions,
  generateTrustConfig,
  shellQuote,
  type TrustDeployment,
} from './generate.js';
export { explainGeneric, type GenericRelyingParty, parseGenericConfig } from './generic.js';
export { compareIssuer, type IssuerComparison, type IssuerProblem, issuerProblems } from './issuer.js';
export { type DuplicateKey, findDuplicateKeys } from './json-source.js';
export { LINT_RULES, type LintFinding, type LintOptions, type LintRuleId, type LintSeverity, lintTrustConfig } from './lint.js';
export { describeSubjectDifference, parseSubject, type SubjectParts, type WildcardReach, wildcardReach } from './subject.js';
export { checkSignature, decodeToken } from './token.js';
export {
  type DecodedToken,
  EXPLAIN_TARGETS,
  type ExplainCheck,
  type ExplainOptions,
  type ExplainResult,
  type ExplainTarget,
  verdictOf,
} from './types.js';
export {
  explainVault,
  parseVaultConfig,
  VAULT_DEFAULT_ALGORITHMS,
  VAULT_DEFAULT_LEEWAYS,
  type VaultAuthConfig,
  type VaultRelyingParty,
  type VaultRole,
  vaultGlob,
  vaultLeeway,
} from './vault.js';
