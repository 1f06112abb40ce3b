import { CelError, compileCel } from '../cel.js';
import { AWS_OIDC_CONDITION_CLAIMS, AWS_STS_AUDIENCE, type AwsRelyingParty, parseAwsOperator } from './aws.js';
import { AZURE_AUDIENCE, type AzureRelyingParty } from './azure.js';
import type { TrustConfig } from './detect.js';
import { compileGcpCondition, GCP_LIMITS, type GcpRelyingParty, gcpDefaultAudiences } from './gcp.js';
import type { GenericRelyingParty } from './generic.js';
import { compareIssuer, issuerProblems } from './issuer.js';
import { findDuplicateKeys } from './json-source.js';
import { isRecord, nearMiss, q, stringList } from './lib.js';
import { type WildcardReach, wildcardReach } from './subject.js';
import type { VaultRelyingParty } from './vault.js';

/**
 * `trust lint`: what in a relying party's configuration lets other pipelines in (or keeps this one
 * out). Each finding has a stable id, a severity and a fix.
 */

/** How bad a finding is: `error` lets others in or never works; `warning` is risky; `info` is advice. */
export type LintSeverity = 'error' | 'warning' | 'info';

/** One finding of {@link lintTrustConfig}. */
export interface LintFinding {
  /** Stable id (see {@link LINT_RULES}). */
  id: LintRuleId;
  severity: LintSeverity;
  /** What is wrong, naming the value. */
  message: string;
  /** What to change. */
  fix: string;
  /** Where, in the configuration (`Statement[0].Condition`, `attributeCondition`). */
  path?: string;
}

/** Every finding id, with its severity and what it means. */
export const LINT_RULES = {
  'sub-not-pinned': {
    severity: 'error',
    summary: 'nothing restricts sub: any workload of the issuer (any deployment, any tenant) gets in',
  },
  'sub-wildcard-workspace': { severity: 'error', summary: 'a sub wildcard reaches other workspaces (other tenants)' },
  'sub-wildcard-deployment': { severity: 'error', summary: 'a sub wildcard reaches other deployments' },
  'sub-wildcard-environment': { severity: 'warning', summary: 'a sub wildcard reaches other environments of the deployment' },
  'issuer-typo': {
    severity: 'error',
    summary: 'the issuer will not equal iss (trailing slash, double slash, http, host case, another host)',
  },
  'audience-typo': {
    severity: 'error',
    summary: 'an audience is a near miss of the expected one (sts.amazon.com, api://azureadtokenexchange)',
  },
  'aws-for-all-values': { severity: 'error', summary: 'ForAllValues on aud or sub is true when the claim is absent' },
  'aws-no-aud-condition': { severity: 'warning', summary: 'no condition on aud: any audience the provider lists is accepted' },
  'aws-custom-claim-key': {
    severity: 'error',
    summary: 'a condition on a claim IAM does not expose (only aud, sub, amr, azp): it never matches',
  },
  'aws-string-like-no-wildcard': { severity: 'info', summary: 'StringLike without a wildcard: works, but StringEquals says what is meant' },
  'aws-literal-wildcard': { severity: 'error', summary: 'StringEquals with * or ?: compared literally, it never matches' },
  'aws-duplicate-key': { severity: 'error', summary: 'a key written twice in one JSON object: IAM silently keeps only one' },
  'aws-principal-wildcard': { severity: 'error', summary: 'Principal "*": every identity provider of the account' },
  'gcp-no-attribute-condition': { severity: 'error', summary: 'no attribute condition: every token of the issuer maps into the pool' },
  'gcp-no-subject-mapping': { severity: 'error', summary: 'google.subject is not mapped' },
  'gcp-limit': { severity: 'error', summary: 'an expression is over GCP’s size limits' },
  'gcp-invalid-cel': { severity: 'error', summary: 'an expression does not compile' },
  'gcp-binding-whole-pool': { severity: 'error', summary: 'the IAM binding grants every identity of the pool' },
  'azure-flexible-match': { severity: 'error', summary: 'claimsMatchingExpression is not available for self-hosted issuers' },
  'azure-wildcard-subject': { severity: 'error', summary: 'a wildcard in an exact-match subject never matches' },
  'azure-multiple-audiences': { severity: 'warning', summary: 'Entra expects one audience per credential' },
  'vault-role-type': { severity: 'error', summary: 'role_type is not "jwt" (Vault defaults to "oidc")' },
  'vault-no-bound-subject': { severity: 'error', summary: 'no bound_subject and no bound_claims on sub or deployment_id' },
  'vault-no-bound-audiences': { severity: 'error', summary: 'no bound_audiences: Vault ≥ 1.16.3 refuses tokens with aud' },
  'vault-no-bound-issuer': { severity: 'warning', summary: 'no bound_issuer: iss is not checked' },
  'vault-literal-wildcard': { severity: 'error', summary: '* in bound_claims without bound_claims_type=glob is literal: never matches' },
  'vault-no-user-claim': { severity: 'error', summary: 'no user_claim: Vault refuses to save the role' },
  'pin-immutable-id': { severity: 'info', summary: 'sub names the deployment by name; also pin deployment_id, which is never reused' },
} as const satisfies Record<string, { severity: LintSeverity; summary: string }>;

/** A finding id. */
export type LintRuleId = keyof typeof LINT_RULES;

/** Options for {@link lintTrustConfig}. */
export interface LintOptions {
  /** The Tessera issuer, to compare the configured one with (from the server's discovery document). */
  issuer?: string;
  /** The configuration's JSON text, to find keys written twice. */
  source?: string;
}

function finding(id: LintRuleId, message: string, fix: string, path?: string): LintFinding {
  return { id, severity: LINT_RULES[id].severity, message, fix, ...(path ? { path } : {}) };
}

const REACH_RULE: Record<Exclude<WildcardReach, 'none' | 'foreign'>, LintRuleId> = {
  workspace: 'sub-wildcard-workspace',
  deployment: 'sub-wildcard-deployment',
  environment: 'sub-wildcard-environment',
};

const REACH_TEXT: Record<Exclude<WildcardReach, 'none' | 'foreign'>, string> = {
  workspace: 'any workspace — any tenant of the issuer',
  deployment: 'other deployments of the workspace',
  environment: 'every environment of the deployment',
};

function wildcardFinding(pattern: string, wildcards: string, path: string, exactFix: string): LintFinding | undefined {
  const reach = wildcardReach(pattern, wildcards);
  if (reach === 'none' || reach === 'foreign') return undefined;
  return finding(REACH_RULE[reach], `sub pattern ${q(pattern)} matches ${REACH_TEXT[reach]}`, exactFix, path);
}

function issuerFindings(configured: string, path: string, options: LintOptions, rp: { https: boolean; noPort?: boolean }): LintFinding[] {
  const out: LintFinding[] = [];
  for (const p of issuerProblems(configured, { requireHttps: rp.https, allowPort: !rp.noPort })) {
    out.push(
      finding(
        'issuer-typo',
        p.message,
        `use the issuer exactly as the server's discovery document names it${options.issuer ? `: ${q(options.issuer)}` : ''}`,
        path,
      ),
    );
  }
  if (options.issuer && out.length === 0) {
    const cmp = compareIssuer(configured, options.issuer);
    if (!cmp.ok)
      out.push(
        finding(
          'issuer-typo',
          `issuer ${q(configured)} is not the Tessera issuer ${q(options.issuer)}${cmp.diagnosis ? ` (${cmp.diagnosis})` : ''}`,
          `use ${q(options.issuer)}`,
          path,
        ),
      );
  }
  return out;
}

const OIDC_ARN = /^arn:aws[a-z-]*:iam::\d{12}:oidc-provider\/(.+)$/i;

function lintAws(rp: AwsRelyingParty, options: LintOptions): LintFinding[] {
  const out: LintFinding[] = [];
  const dups = rp.duplicateKeys ?? (options.source ? findDuplicateKeys(options.source) : []);
  for (const d of dups) {
    out.push(
      finding(
        'aws-duplicate-key',
        `${d.path} has ${q(d.key)} twice: only one of them takes effect`,
        'merge the two blocks into one object',
        d.path,
      ),
    );
  }
  rp.policy.Statement.forEach((s, i) => {
    const at = `Statement[${i}]`;
    if (s.Effect !== 'Allow') return;
    const actions = stringList(s.Action) ?? [];
    if (!actions.some((a) => /^(sts:\*|\*|sts:AssumeRoleWithWebIdentity)$/i.test(a))) return;
    const principal = s.Principal;
    if (principal === '*' || (isRecord(principal) && principal.AWS === '*')) {
      out.push(
        finding(
          'aws-principal-wildcard',
          `${at} trusts Principal "*"`,
          'name the provider: "Principal": {"Federated": "arn:aws:iam::ACCOUNT:oidc-provider/HOST"}',
          `${at}.Principal`,
        ),
      );
    }
    const federated = isRecord(principal) ? (stringList(principal.Federated) ?? []) : [];
    const paths = federated.map((arn) => OIDC_ARN.exec(arn)?.[1]).filter((p): p is string => p !== undefined);
    for (const p of paths) out.push(...issuerFindings(`https://${p}`, `${at}.Principal.Federated`, options, { https: true, noPort: true }));
    const providerPath = paths[0];
    const subPositive: string[] = [];
    let audPositive = 0;
    for (const [operator, block] of Object.entries(s.Condition ?? {})) {
      const op = parseAwsOperator(operator);
      for (const [key, value] of Object.entries(block)) {
        const where = `${at}.Condition.${operator}.${key}`;
        const prefix =
          providerPath && key.toLowerCase().startsWith(`${providerPath.toLowerCase()}:`)
            ? providerPath
            : key.includes(':')
              ? key.slice(0, key.lastIndexOf(':'))
              : '';
        if (prefix.toLowerCase().startsWith('aws:') || key.toLowerCase().startsWith('aws:')) continue;
        const claim = key.slice(prefix.length + 1).toLowerCase();
        const values = (Array.isArray(value) ? value : [value]).map(String);
        if (!(AWS_OIDC_CONDITION_CLAIMS as readonly string[]).includes(claim) && claim !== 'oaud') {
          out.push(
            finding(
              'aws-custom-claim-key',
              `condition on ${q(key)}: IAM exposes only ${AWS_OIDC_CONDITION_CLAIMS.join(', ')} of an OIDC token, so ${op?.negated ? 'this negated condition is always true' : 'this condition never matches'}`,
              'pin the deployment through sub (its template names workspace, deployment and environment), or use session tags (aws:RequestTag/…)',
              where,
            ),
          );
          continue;
        }
        if (!op) continue;
        if (op.set === 'ForAllValues' && (claim === 'aud' || claim === 'sub')) {
          out.push(
            finding(
              'aws-for-all-values',
              `${operator} on ${q(key)} is true when the token has no ${claim}`,
              `use ${op.base}${op.ifExists ? 'IfExists' : ''} (or ForAnyValue:${op.base}) — ${claim} has one value`,
              where,
            ),
          );
        }
        if (op.negated || op.base === 'Null') continue;
        if (claim === 'sub') subPositive.push(...values);
        if (claim === 'aud') {
          audPositive++;
          for (const v of values) {
            const miss = nearMiss(v, [AWS_STS_AUDIENCE]);
            if (miss || /^https?:\/\/sts\.amazonaws\.com\/?$/.test(v)) {
              out.push(
                finding(
                  'audience-typo',
                  `audience ${q(v)} is not ${q(AWS_STS_AUDIENCE)}`,
                  `use ${q(AWS_STS_AUDIENCE)} (and ask for tokens with it)`,
                  where,
                ),
              );
            }
          }
        }
        if (op.base.includes('Like')) {
          if (values.every((v) => !/[*?]/.test(v))) {
            out.push(
              finding(
                'aws-string-like-no-wildcard',
                `${operator} ${q(key)} has no wildcard: it compares exactly`,
                `say so: StringEquals`,
                where,
              ),
            );
          }
          if (claim === 'sub') {
            for (const v of values) {
              const f = wildcardFinding(
                v,
                '*?',
                where,
                'pin sub exactly with StringEquals: "ws:WORKSPACE:deployment:NAME:env:ENV" (`tessera trust generate` writes it)',
              );
              if (f) out.push(f);
            }
          }
        } else if (op.base.startsWith('StringEquals') && values.some((v) => /[*?]/.test(v))) {
          out.push(
            finding(
              'aws-literal-wildcard',
              `${operator} ${q(key)} = ${values.map(q).join(', ')}: the wildcard is compared literally`,
              'use StringLike for a pattern — or better, pin the exact value',
              where,
            ),
          );
        }
      }
    }
    if (subPositive.length === 0) {
      out.push(
        finding(
          'sub-not-pinned',
          `${at} allows sts:AssumeRoleWithWebIdentity with no condition on sub: any workload of the issuer can assume the role`,
          `add "StringEquals": {"${providerPath ?? 'HOST'}:sub": "ws:WORKSPACE:deployment:NAME:env:ENV"} (\`tessera trust generate --target aws\`)`,
          `${at}.Condition`,
        ),
      );
    }
    if (audPositive === 0) {
      out.push(
        finding(
          'aws-no-aud-condition',
          `${at} has no condition on aud`,
          `add "${providerPath ?? 'HOST'}:aud": "${AWS_STS_AUDIENCE}" to the StringEquals block`,
          `${at}.Condition`,
        ),
      );
    }
  });
  return out;
}

/** Sub patterns a CEL condition expresses through string functions (heuristic). */
function celSubPatterns(expr: string): { pattern: string; how: string }[] {
  const out: { pattern: string; how: string }[] = [];
  const target = String.raw`(?:assertion\.sub|assertion\[["']sub["']\]|google\.subject)`;
  const lit = String.raw`(["'])((?:\\.|(?!\2).)*)\2`;
  const fn = new RegExp(`${target}\\s*\\.\\s*(startsWith|endsWith|contains|matches)\\s*\\(\\s*${lit}\\s*\\)`, 'g');
  for (const m of expr.matchAll(fn)) {
    const kind = m[1] as string;
    const value = m[3] as string;
    if (kind === 'startsWith') out.push({ pattern: `${value}*`, how: `${kind}(${q(value)})` });
    else if (kind === 'endsWith') out.push({ pattern: `*${value}`, how: `${kind}(${q(value)})` });
    else if (kind === 'contains') out.push({ pattern: `*${value}*`, how: `${kind}(${q(value)})` });
    else {
      const anchoredStart = value.startsWith('^');
      const anchoredEnd = value.endsWith('$') && !value.endsWith('\\$');
      let body = value.replace(/^\^/, '').replace(/\$$/, '');
      body = body.replace(/\[\^?[^\]]*\][*+?]?|\.[*+?]|\.|\\.|[()|{}+?]/g, (t) => (t.startsWith('\\') ? t.slice(1) : '*'));
      out.push({ pattern: `${anchoredStart ? '' : '*'}${body}${anchoredEnd ? '' : '*'}`, how: `matches(${q(value)})` });
    }
  }
  return out;
}

const SUB_REF = /assertion\.sub\b|assertion\[["']sub["']\]|google\.subject\b/;
const ID_REF = /(assertion|attribute)\.deployment_id\b|assertion\[["']deployment_id["']\]/;
const DEPLOYMENT_REF = /(assertion|attribute)\.deployment\b/;

function lintGcp(rp: GcpRelyingParty, options: LintOptions): LintFinding[] {
  const out: LintFinding[] = [];
  out.push(...issuerFindings(rp.issuerUri, 'oidc.issuerUri', options, { https: true }));
  if (rp.attributeMapping['google.subject'] === undefined) {
    out.push(
      finding(
        'gcp-no-subject-mapping',
        'attributeMapping has no google.subject',
        '--attribute-mapping=google.subject=assertion.sub,…',
        'attributeMapping',
      ),
    );
  }
  for (const [key, expr] of Object.entries(rp.attributeMapping)) {
    if (expr.length > GCP_LIMITS.mappingExpression) {
      out.push(
        finding(
          'gcp-limit',
          `attributeMapping ${key}: ${expr.length} characters (limit ${GCP_LIMITS.mappingExpression})`,
          'shorten the expression',
          `attributeMapping.${key}`,
        ),
      );
      continue;
    }
    try {
      compileCel(expr, { variables: ['assertion'] });
    } catch (e) {
      if (!(e instanceof CelError && /disabled/.test(e.message))) {
        out.push(
          finding(
            'gcp-invalid-cel',
            `attributeMapping ${key}: ${(e as Error).message}`,
            'fix the CEL expression (it reads the token as `assertion`)',
            `attributeMapping.${key}`,
          ),
        );
      }
    }
  }
  if (rp.name) {
    const defaults = gcpDefaultAudiences(rp.name);
    for (const a of rp.allowedAudiences) {
      if (defaults.includes(a)) continue;
      const miss = nearMiss(a, defaults);
      if (miss)
        out.push(
          finding(
            'audience-typo',
            `allowed audience ${q(a)} is a near miss of the provider's name ${q(miss)}`,
            `use ${q(miss)}, or leave allowedAudiences empty to accept the default`,
            'oidc.allowedAudiences',
          ),
        );
    }
  }
  const expr = rp.attributeCondition;
  if (expr === undefined) {
    out.push(
      finding(
        'gcp-no-attribute-condition',
        'no attributeCondition: every token of the issuer with an accepted audience maps into the pool',
        '--attribute-condition=\'assertion.sub == "ws:…:deployment:NAME:env:ENV" && assertion.deployment_id == "ID"\' (`tessera trust generate --target gcp`)',
        'attributeCondition',
      ),
    );
  } else {
    if (expr.length > GCP_LIMITS.conditionExpression) {
      out.push(
        finding(
          'gcp-limit',
          `attributeCondition: ${expr.length} characters (limit ${GCP_LIMITS.conditionExpression})`,
          'shorten the condition',
          'attributeCondition',
        ),
      );
    } else {
      try {
        compileGcpCondition(expr);
      } catch (e) {
        if (!(e instanceof CelError && /disabled/.test(e.message))) {
          out.push(
            finding(
              'gcp-invalid-cel',
              `attributeCondition: ${(e as Error).message.replaceAll('google_', 'google')}`,
              'fix the CEL expression (variables: assertion, google, attribute)',
              'attributeCondition',
            ),
          );
        }
      }
    }
    const pinsId = ID_REF.test(expr) && !expr.includes('||');
    if (!SUB_REF.test(expr) && !ID_REF.test(expr) && !DEPLOYMENT_REF.test(expr)) {
      out.push(
        finding(
          'sub-not-pinned',
          `attributeCondition ${q(expr.length > 80 ? `${expr.slice(0, 80)}…` : expr)} restricts neither sub nor the deployment`,
          'add assertion.sub == "ws:…:deployment:NAME:env:ENV" && assertion.deployment_id == "ID"',
          'attributeCondition',
        ),
      );
    }
    if (!pinsId) {
      for (const { pattern, how } of celSubPatterns(expr)) {
        const f = wildcardFinding(
          pattern,
          '*',
          'attributeCondition',
          'compare exactly: assertion.sub == "ws:WORKSPACE:deployment:NAME:env:ENV", and pin assertion.deployment_id',
        );
        if (f) out.push({ ...f, message: `${f.message} (${how})` });
      }
    }
    if (!ID_REF.test(expr)) {
      out.push(
        finding(
          'pin-immutable-id',
          'the attribute condition does not pin deployment_id',
          '&& assertion.deployment_id == "ID" (the id never passes to another deployment)',
          'attributeCondition',
        ),
      );
    }
  }
  if (rp.member && /\/workloadIdentityPools\/[^/]+\/\*$/.test(rp.member)) {
    out.push(
      finding(
        'gcp-binding-whole-pool',
        `binding ${q(rp.member)} grants every identity in the pool`,
        'bind principalSet://…/attribute.deployment_id/ID (or principal://…/subject/SUB)',
        'binding.member',
      ),
    );
  }
  return out;
}

function lintAzure(rp: AzureRelyingParty, options: LintOptions): LintFinding[] {
  const out: LintFinding[] = [];
  rp.credentials.forEach((c, i) => {
    const at = rp.credentials.length > 1 ? `[${i}]` : '';
    out.push(...issuerFindings(c.issuer, `${at}issuer`.replace(/^\./, ''), options, { https: true }));
    if (c.claimsMatchingExpression !== undefined) {
      out.push(
        finding(
          'azure-flexible-match',
          `claimsMatchingExpression ${q(c.claimsMatchingExpression)}: flexible matching works only for a few named CI issuers, not a self-hosted one`,
          'use one credential per deployment with an exact "subject" (`tessera trust generate --target azure`)',
          `${at}claimsMatchingExpression`,
        ),
      );
    }
    if (c.subject !== undefined && /[*?]/.test(c.subject)) {
      out.push(
        finding(
          'azure-wildcard-subject',
          `subject ${q(c.subject)}: Entra matches exactly, the wildcard is a plain character`,
          'use the exact subject of the deployment',
          `${at}subject`,
        ),
      );
    }
    for (const a of c.audiences) {
      if (a === AZURE_AUDIENCE) continue;
      if (a.toLowerCase() === AZURE_AUDIENCE.toLowerCase() || nearMiss(a, [AZURE_AUDIENCE])) {
        out.push(
          finding(
            'audience-typo',
            `audience ${q(a)} is not ${q(AZURE_AUDIENCE)} (compared case-sensitively)`,
            `use ${q(AZURE_AUDIENCE)}`,
            `${at}audiences`,
          ),
        );
      }
    }
    if (c.audiences.length > 1)
      out.push(finding('azure-multiple-audiences', `${c.audiences.length} audiences`, `keep one: ${q(AZURE_AUDIENCE)}`, `${at}audiences`));
  });
  return out;
}

function lintVault(rp: VaultRelyingParty, options: LintOptions): LintFinding[] {
  const out: LintFinding[] = [];
  const { role, config } = rp;
  if ((role.role_type ?? 'oidc') !== 'jwt') {
    out.push(
      finding(
        'vault-role-type',
        `role_type is ${q(role.role_type ?? 'oidc')}${role.role_type ? '' : ' (the default)'}: JWT logins are refused`,
        'set role_type=jwt',
        'role.role_type',
      ),
    );
  }
  if (!role.user_claim) out.push(finding('vault-no-user-claim', 'no user_claim', 'set user_claim=sub', 'role.user_claim'));
  if (!config.bound_issuer) {
    out.push(
      finding(
        'vault-no-bound-issuer',
        'auth config has no bound_issuer: iss is not checked',
        `set bound_issuer=${options.issuer ?? config.oidc_discovery_url ?? 'https://…'}`,
        'config.bound_issuer',
      ),
    );
  } else {
    out.push(...issuerFindings(config.bound_issuer, 'config.bound_issuer', options, { https: false }));
  }
  if (config.oidc_discovery_url)
    out.push(...issuerFindings(config.oidc_discovery_url, 'config.oidc_discovery_url', options, { https: false }));
  if (!role.bound_audiences?.length) {
    out.push(
      finding(
        'vault-no-bound-audiences',
        'no bound_audiences: since Vault 1.16.3 every Tessera token (it always has aud) is refused',
        'set bound_audiences to the audience the deployment asks for',
        'role.bound_audiences',
      ),
    );
  }
  const glob = role.bound_claims_type === 'glob';
  const claims = role.bound_claims ?? {};
  const subValues = [...(stringList(claims.sub) ?? [])];
  const pinsSub = !!role.bound_subject || subValues.length > 0 || claims.deployment_id !== undefined || claims.deployment !== undefined;
  if (!pinsSub) {
    out.push(
      finding(
        'vault-no-bound-subject',
        'the role has no bound_subject and no bound_claims on sub or deployment_id: any token of the issuer with the audience logs in',
        'set bound_subject="ws:WORKSPACE:deployment:NAME:env:ENV" and bound_claims={"deployment_id": "ID"} (`tessera trust generate --target vault`)',
        'role',
      ),
    );
  }
  for (const [claim, value] of Object.entries(claims)) {
    const values = stringList(value) ?? [];
    if (!glob && values.some((v) => v.includes('*'))) {
      out.push(
        finding(
          'vault-literal-wildcard',
          `bound_claims ${claim} = ${values.map(q).join(', ')}: "*" is literal unless bound_claims_type=glob`,
          'set bound_claims_type=glob, or (better) bind the exact value',
          `role.bound_claims.${claim}`,
        ),
      );
    }
    if (glob && claim === 'sub') {
      for (const v of values) {
        const f = wildcardFinding(
          v,
          '*',
          `role.bound_claims.${claim}`,
          'bind the exact sub with bound_subject, and deployment_id in bound_claims',
        );
        if (f) out.push(f);
      }
    }
  }
  if (role.bound_subject?.includes('*')) {
    out.push(
      finding(
        'vault-literal-wildcard',
        `bound_subject ${q(role.bound_subject)}: compared exactly, the "*" is literal`,
        'bind the exact sub',
        'role.bound_subject',
      ),
    );
  }
  if (pinsSub && claims.deployment_id === undefined) {
    out.push(
      finding(
        'pin-immutable-id',
        'the role does not bind deployment_id',
        'add bound_claims={"deployment_id": "ID"}: the id never passes to another deployment',
        'role.bound_claims',
      ),
    );
  }
  return out;
}

function lintGeneric(rp: GenericRelyingParty, options: LintOptions): LintFinding[] {
  const out = issuerFindings(rp.issuer, 'issuer', options, { https: false });
  const auds = stringList(rp.audience) ?? [];
  for (const a of auds) {
    const miss = nearMiss(a, [AWS_STS_AUDIENCE, AZURE_AUDIENCE]);
    if (miss) out.push(finding('audience-typo', `audience ${q(a)} looks like a typo of ${q(miss)}`, `use ${q(miss)}`, 'audience'));
  }
  return out;
}

const ORDER: Record<LintSeverity, number> = { error: 0, warning: 1, info: 2 };

/**
 * Lints a relying party's configuration for what lets other pipelines in: no `sub` restriction,
 * wildcards across workspace or deployment boundaries, `ForAllValues` on `aud`/`sub`, audience and
 * issuer typos, a GCP provider without attribute condition, a Vault role without bound subject.
 * Findings come errors first.
 */
export function lintTrustConfig(trust: TrustConfig, options: LintOptions = {}): LintFinding[] {
  let findings: LintFinding[];
  switch (trust.target) {
    case 'aws':
      findings = lintAws(trust.config, options);
      break;
    case 'gcp':
      findings = lintGcp(trust.config, options);
      break;
    case 'azure':
      findings = lintAzure(trust.config, options);
      break;
    case 'vault':
      findings = lintVault(trust.config, options);
      break;
    case 'generic':
      findings = lintGeneric(trust.config, options);
      break;
  }
  return findings.sort((a, b) => ORDER[a.severity] - ORDER[b.severity]);
}
