import { TesseraError } from '@tessera/core';
import { AWS_STS_AUDIENCE, awsProviderPath } from './aws.js';
import { AZURE_AUDIENCE } from './azure.js';
import { gcpDefaultAudiences } from './gcp.js';
import { issuerProblems } from './issuer.js';
import { q } from './lib.js';

/**
 * Writes a relying party's configuration that trusts exactly one Tessera deployment: the issuer as
 * published, one audience, and `sub` pinned to the deployment (plus its immutable `deployment_id`
 * wherever the relying party can see custom claims: GCP and Vault), with the commands to apply it.
 */

/** The deployment a configuration is generated for. */
export interface TrustDeployment {
  name: string;
  /** The immutable id (`deployment_id` claim). */
  id: string;
  environment: string;
  /** The deployment's `identity.audiences`. */
  audiences: string[];
  /** @default 'RS256' */
  algorithm?: string;
  /** Whether its tokens carry AWS session tags (then the trust policy must allow `sts:TagSession`). */
  awsSessionTags?: boolean;
}

/** Options for {@link generateTrustConfig}. */
export interface GenerateTrustOptions {
  target: 'aws' | 'gcp' | 'azure' | 'vault';
  /** The issuer, exactly as the server's discovery document names it. */
  issuer: string;
  /** The deployment's `sub`, exactly as its tokens carry it. */
  subject: string;
  deployment: TrustDeployment;
  /** The audience to trust; each target has a sensible default. */
  audience?: string;
  /** The file the configuration will be written to, for the commands. @default 'trust.json' */
  file?: string;
  aws?: { accountId?: string; roleName?: string; partition?: string };
  gcp?: { projectNumber?: string; pool?: string; provider?: string; serviceAccount?: string };
  azure?: { name?: string; clientId?: string; identityName?: string; resourceGroup?: string };
  vault?: { role?: string; mount?: string; policies?: string[] };
}

/** A generated configuration. */
export interface GeneratedTrust {
  target: GenerateTrustOptions['target'];
  /** The configuration, as JSON to write to a file (also what `explain` and `lint` read). */
  config: Record<string, unknown>;
  /** The audience the configuration trusts: ask for tokens with it. */
  audience: string;
  /** Shell commands that apply the configuration, with comments. */
  commands: string[];
  /** Things to fix or know before applying it. */
  notes: string[];
}

/** Quotes a value for POSIX shells. */
export function shellQuote(value: string): string {
  return /^[A-Za-z0-9_./:@=,+-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

function need(value: string | undefined, flag: string, target: string): string {
  if (value === undefined || value === '')
    throw new TesseraError('ERR_VALIDATION', `${flag} is required for --target ${target}`, { details: { field: flag } });
  return value;
}

function audienceNote(audience: string, d: TrustDeployment): string[] {
  if (d.audiences.includes(audience)) return [];
  return [
    `deployment ${q(d.name)} does not allow audience ${q(audience)} yet (allowed: ${d.audiences.join(', ') || 'none'}): add it to identity.audiences in tessera.yaml and run \`tessera deploy\`, or its runs cannot get tokens for this relying party`,
  ];
}

function issuerNotes(issuer: string, https: boolean): string[] {
  return issuerProblems(issuer, { requireHttps: https, allowPort: !https }).map(
    (p) =>
      `${p.message}${p.kind === 'http' || p.kind === 'port' ? " — set the server's public URL (TESSERA_PUBLIC_URL) to its https address" : ''}`,
  );
}

const RECYCLED = (name: string) =>
  `sub names the deployment by name: if ${q(name)} is deleted and another deployment later takes the name, it inherits this trust — remove the trust when you delete the deployment`;

function generateAws(o: GenerateTrustOptions): GeneratedTrust {
  const d = o.deployment;
  const accountId = need(o.aws?.accountId, '--account-id', 'aws');
  if (!/^\d{12}$/.test(accountId))
    throw new TesseraError('ERR_VALIDATION', `--account-id must be a 12-digit AWS account id, found ${q(accountId)}`);
  const { path, problem } = awsProviderPath(o.issuer);
  const provider = path ?? o.issuer.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  const partition = o.aws?.partition ?? 'aws';
  const arn = `arn:${partition}:iam::${accountId}:oidc-provider/${provider}`;
  const audience = o.audience ?? AWS_STS_AUDIENCE;
  const role = o.aws?.roleName ?? `tessera-${d.name}-${d.environment}`.replace(/[^\w+=,.@-]/g, '-').slice(0, 64);
  const pascal = (v: string) =>
    v
      .split(/[^A-Za-z0-9]+/)
      .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
      .join('');
  const sid = `Tessera${pascal(d.name)}${pascal(d.environment)}`.slice(0, 100);
  const config = {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: sid,
        Effect: 'Allow',
        Principal: { Federated: arn },
        Action: d.awsSessionTags ? ['sts:AssumeRoleWithWebIdentity', 'sts:TagSession'] : 'sts:AssumeRoleWithWebIdentity',
        Condition: { StringEquals: { [`${provider}:aud`]: audience, [`${provider}:sub`]: o.subject } },
      },
    ],
  };
  const file = o.file ?? 'trust.json';
  return {
    target: 'aws',
    config,
    audience,
    commands: [
      '# once per account: the OIDC provider for the Tessera issuer (its client IDs are the accepted audiences)',
      `aws iam create-open-id-connect-provider --url ${shellQuote(`https://${provider}`)} --client-id-list ${shellQuote(audience)}`,
      `#   (already exists? aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn ${arn} --client-id ${shellQuote(audience)})`,
      `# the role, trusting only deployment ${d.name} (${d.environment})`,
      `aws iam create-role --role-name ${shellQuote(role)} --assume-role-policy-document file://${file}`,
      `#   (existing role: aws iam update-assume-role-policy --role-name ${shellQuote(role)} --policy-document file://${file})`,
    ],
    notes: [
      ...(problem ? [problem] : []),
      ...issuerNotes(o.issuer, true).filter((n) => !problem || !n.includes('not https')),
      ...audienceNote(audience, d),
      RECYCLED(d.name),
    ],
  };
}

function generateGcp(o: GenerateTrustOptions): GeneratedTrust {
  const d = o.deployment;
  const num = need(o.gcp?.projectNumber, '--project-number', 'gcp');
  if (!/^\d+$/.test(num))
    throw new TesseraError('ERR_VALIDATION', `--project-number must be the numeric project number (not the project id), found ${q(num)}`);
  const pool = o.gcp?.pool ?? 'tessera';
  const prov = o.gcp?.provider ?? 'tessera';
  const poolName = `projects/${num}/locations/global/workloadIdentityPools/${pool}`;
  const name = `${poolName}/providers/${prov}`;
  const defaults = gcpDefaultAudiences(name);
  const audience = o.audience ?? d.audiences.find((a) => defaults.includes(a)) ?? (defaults[1] as string);
  const allowedAudiences = defaults.includes(audience) ? [] : [audience];
  const mapping = {
    'google.subject': 'assertion.sub',
    'attribute.deployment_id': 'assertion.deployment_id',
    'attribute.deployment': 'assertion.deployment',
    'attribute.environment': 'assertion.environment',
    'attribute.workspace': 'assertion.workspace',
  };
  const condition = `assertion.sub == ${JSON.stringify(o.subject)} && assertion.deployment_id == ${JSON.stringify(d.id)}`;
  const member = `principalSet://iam.googleapis.com/${poolName}/attribute.deployment_id/${d.id}`;
  const sa = o.gcp?.serviceAccount;
  const config = {
    name,
    oidc: { issuerUri: o.issuer, allowedAudiences },
    attributeMapping: mapping,
    attributeCondition: condition,
    binding: { member, role: 'roles/iam.workloadIdentityUser', ...(sa ? { serviceAccount: sa } : {}) },
  };
  const mappingFlag = Object.entries(mapping)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return {
    target: 'gcp',
    config,
    audience,
    commands: [
      '# once: the pool',
      `gcloud iam workload-identity-pools create ${shellQuote(pool)} --project=${num} --location=global --display-name=Tessera`,
      `# the provider, admitting only deployment ${d.name} (${d.environment}, id ${d.id})`,
      [
        `gcloud iam workload-identity-pools providers create-oidc ${shellQuote(prov)} --project=${num} --location=global --workload-identity-pool=${shellQuote(pool)}`,
        `  --issuer-uri=${shellQuote(o.issuer)}`,
        ...(allowedAudiences.length ? [`  --allowed-audiences=${shellQuote(audience)}`] : []),
        `  --attribute-mapping=${shellQuote(mappingFlag)}`,
        `  --attribute-condition=${shellQuote(condition)}`,
      ].join(' \\\n'),
      sa
        ? `gcloud iam service-accounts add-iam-policy-binding ${shellQuote(sa)} --role=roles/iam.workloadIdentityUser --member=${shellQuote(member)}`
        : `# grant roles to ${member} directly, or pass --service-account to impersonate one`,
      '# configuration changes take up to about 5 minutes to apply',
    ],
    notes: [
      ...issuerNotes(o.issuer, true).map(
        (n) => `${n} (GCP fetches discovery and keys over public https, or upload the JWKS with --jwk-json-path)`,
      ),
      ...audienceNote(audience, d),
    ],
  };
}

function generateAzure(o: GenerateTrustOptions): GeneratedTrust {
  const d = o.deployment;
  const audience = o.audience ?? AZURE_AUDIENCE;
  const name = (o.azure?.name ?? `tessera-${d.name}-${d.environment}`)
    .replace(/[^A-Za-z0-9_-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 120);
  const config = {
    name,
    issuer: o.issuer,
    subject: o.subject,
    audiences: [audience],
    description: `Tessera deployment ${d.name} (${d.environment}), id ${d.id}`,
  };
  const file = o.file ?? 'trust.json';
  const clientId = o.azure?.clientId ?? 'APP_CLIENT_ID';
  const identity = o.azure?.identityName ?? 'IDENTITY_NAME';
  const rg = o.azure?.resourceGroup ?? 'RESOURCE_GROUP';
  return {
    target: 'azure',
    config,
    audience,
    commands: [
      `# an app registration: one federated credential trusting only deployment ${d.name} (${d.environment})`,
      `az ad app federated-credential create --id ${shellQuote(clientId)} --parameters ${shellQuote(file)}`,
      '# or a user-assigned managed identity:',
      [
        `az identity federated-credential create --name ${shellQuote(name)} --identity-name ${shellQuote(identity)} --resource-group ${shellQuote(rg)}`,
        `  --issuer ${shellQuote(o.issuer)} --subject ${shellQuote(o.subject)} --audiences ${shellQuote(audience)}`,
      ].join(' \\\n'),
    ],
    notes: [
      ...issuerNotes(o.issuer, true),
      ...audienceNote(audience, d),
      RECYCLED(d.name),
      'at most 20 federated credentials per application or managed identity',
    ],
  };
}

const CLOUD_AUDIENCE = /^(sts\.amazonaws\.com|api:\/\/AzureADTokenExchange|(https:)?\/\/iam\.googleapis\.com\/.*)$/;

function generateVault(o: GenerateTrustOptions): GeneratedTrust {
  const d = o.deployment;
  let audience = o.audience;
  if (audience === undefined) {
    const own = d.audiences.filter((a) => !CLOUD_AUDIENCE.test(a));
    if (own.length !== 1) {
      throw new TesseraError(
        'ERR_VALIDATION',
        `--audience is required for --target vault: deployment ${q(d.name)} allows ${own.length ? own.map(q).join(', ') : 'no Vault audience'}; pass the audience your Vault role should bind (and allow it in identity.audiences)`,
        { details: { field: '--audience' } },
      );
    }
    audience = own[0] as string;
  }
  const mount = (o.vault?.mount ?? 'jwt').replace(/^\/+|\/+$/g, '');
  const roleName = o.vault?.role ?? `tessera-${d.name}-${d.environment}`.replace(/[^A-Za-z0-9_.-]/g, '-');
  const config = {
    config: { oidc_discovery_url: o.issuer, bound_issuer: o.issuer, jwt_supported_algs: [d.algorithm ?? 'RS256'] },
    role: {
      role_type: 'jwt',
      user_claim: 'sub',
      bound_audiences: [audience],
      bound_subject: o.subject,
      bound_claims_type: 'string',
      bound_claims: { deployment_id: d.id },
      claim_mappings: { deployment: 'deployment', deployment_id: 'deployment_id', environment: 'environment', run_id: 'run_id' },
      token_policies: o.vault?.policies ?? [roleName],
      token_ttl: '15m',
      token_max_ttl: '1h',
    },
    name: roleName,
  };
  const file = o.file ?? 'trust.json';
  return {
    target: 'vault',
    config,
    audience,
    commands: [
      `vault auth enable -path=${shellQuote(mount)} jwt    # once`,
      `jq .config ${shellQuote(file)} | vault write auth/${mount}/config -`,
      `# the role, admitting only deployment ${d.name} (${d.environment}, id ${d.id})`,
      `jq .role ${shellQuote(file)} | vault write auth/${mount}/role/${roleName} -`,
      `# a run logs in with: vault write auth/${mount}/login role=${roleName} jwt=@token-file`,
    ],
    notes: [
      ...issuerNotes(o.issuer, false),
      ...audienceNote(audience, d),
      ...(o.vault?.policies?.length ? [] : [`write a policy named ${q(roleName)} (or pass --policy) granting what the deployment needs`]),
    ],
  };
}

/**
 * Generates a tightly pinned configuration for one deployment.
 * @throws TesseraError `ERR_VALIDATION` naming the missing flag (`--account-id`, `--project-number`, `--audience`).
 */
export function generateTrustConfig(options: GenerateTrustOptions): GeneratedTrust {
  switch (options.target) {
    case 'aws':
      return generateAws(options);
    case 'gcp':
      return generateGcp(options);
    case 'azure':
      return generateAzure(options);
    case 'vault':
      return generateVault(options);
    default:
      throw new TesseraError('ERR_VALIDATION', `--target must be aws, gcp, azure or vault, found ${q(options.target)}`);
  }
}
