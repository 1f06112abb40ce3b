import { type AwsRelyingParty, explainAws, parseAwsConfig } from './aws.js';
import { type AzureRelyingParty, explainAzure, parseAzureConfig } from './azure.js';
import { explainGcp, type GcpRelyingParty, parseGcpConfig } from './gcp.js';
import { explainGeneric, type GenericRelyingParty, parseGenericConfig } from './generic.js';
import { configError, isRecord } from './lib.js';
import type { DecodedToken, ExplainOptions, ExplainResult, ExplainTarget } from './types.js';
import { explainVault, parseVaultConfig, type VaultRelyingParty } from './vault.js';

/** A relying party's configuration, parsed, tagged with its target. */
export type TrustConfig =
  | { target: 'generic'; config: GenericRelyingParty }
  | { target: 'aws'; config: AwsRelyingParty }
  | { target: 'gcp'; config: GcpRelyingParty }
  | { target: 'azure'; config: AzureRelyingParty }
  | { target: 'vault'; config: VaultRelyingParty };

/**
 * Guesses which relying party a configuration is for, from its shape: a trust policy
 * (`Statement`) is AWS, a provider with `oidc`/`attributeMapping` is GCP, `{issuer, subject,
 * audiences}` is Azure, `bound_*`/`role_type`/`user_claim` is Vault, `{issuer, audience}` is generic.
 */
export function detectTarget(raw: unknown): ExplainTarget | undefined {
  const first = Array.isArray(raw) ? raw[0] : raw;
  if (!isRecord(first)) return undefined;
  const o = isRecord(first.data) ? first.data : first;
  if (
    'Statement' in o ||
    'TrustPolicy' in o ||
    'AssumeRolePolicyDocument' in o ||
    (isRecord(o.Role) && 'AssumeRolePolicyDocument' in o.Role)
  )
    return 'aws';
  if ('oidc' in o || 'attributeMapping' in o || 'attributeCondition' in o || 'issuerUri' in o) return 'gcp';
  const role = isRecord(o.role) ? o.role : o;
  if (
    ['bound_audiences', 'bound_subject', 'bound_claims', 'role_type', 'user_claim', 'bound_issuer'].some((k) => k in role) ||
    isRecord(o.role)
  ) {
    return 'vault';
  }
  if ('issuer' in o && ('subject' in o || 'audiences' in o || 'claimsMatchingExpression' in o)) return 'azure';
  if ('issuer' in o && 'audience' in o) return 'generic';
  return undefined;
}

/**
 * Parses a relying party's configuration (already JSON-parsed) for `target`, or for the detected
 * target with `'auto'`. `source` is the JSON text, to find keys written twice.
 * @throws TesseraError `ERR_CONFIG` naming the field that is wrong, or asking for `--target`.
 */
export function parseTrustConfig(raw: unknown, target: ExplainTarget | 'auto' = 'auto', options: { source?: string } = {}): TrustConfig {
  const t = target === 'auto' ? detectTarget(raw) : target;
  switch (t) {
    case 'generic':
      return { target: t, config: parseGenericConfig(raw) };
    case 'aws':
      return { target: t, config: parseAwsConfig(raw, options) };
    case 'gcp':
      return { target: t, config: parseGcpConfig(raw) };
    case 'azure':
      return { target: t, config: parseAzureConfig(raw) };
    case 'vault':
      return { target: t, config: parseVaultConfig(raw) };
    default:
      throw configError(
        'cannot tell which relying party this configuration is for; pass --target aws|gcp|azure|vault|generic (an AWS trust policy has "Statement", a GCP provider "oidc", an Azure credential "issuer"/"subject"/"audiences", a Vault role "bound_*"/"user_claim")',
      );
  }
}

/** Runs the evaluator for a parsed {@link TrustConfig}. */
export function explainToken(token: DecodedToken, trust: TrustConfig, options: ExplainOptions = {}): ExplainResult {
  switch (trust.target) {
    case 'generic':
      return explainGeneric(token, trust.config, options);
    case 'aws':
      return explainAws(token, trust.config, options);
    case 'gcp':
      return explainGcp(token, trust.config, options);
    case 'azure':
      return explainAzure(token, trust.config, options);
    case 'vault':
      return explainVault(token, trust.config, options);
  }
}
