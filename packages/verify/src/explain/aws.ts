import { glob } from '../cel.js';
import { algorithmCheck } from './generic.js';
import { compareIssuer } from './issuer.js';
import { findDuplicateKeys } from './json-source.js';
import { configError, isRecord, nearMiss, q, stringList, timeChecks, tokenAudiences } from './lib.js';
import { describeSubjectDifference } from './subject.js';
import { type DecodedToken, type ExplainCheck, type ExplainOptions, type ExplainResult, verdictOf } from './types.js';

/**
 * AWS IAM: an OIDC identity provider (URL + client-ID list) and a role whose trust policy lets
 * `sts:AssumeRoleWithWebIdentity` through. Conditions are evaluated as IAM does: condition keys
 * case-insensitive, values case-sensitive (except `…IgnoreCase`), several values of one key OR,
 * several keys AND, several operators AND; negated operators are true when the key is absent,
 * `ForAllValues:` is true when the key is absent.
 * @see https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
 */

/** One statement of a trust policy, as written. */
export interface AwsStatement {
  Sid?: string;
  Effect: string;
  Principal?: unknown;
  NotPrincipal?: unknown;
  Action?: string | string[];
  NotAction?: string | string[];
  Condition?: Record<string, Record<string, unknown>>;
}

/** An AWS role trust policy, plus the account's OIDC provider when known. */
export interface AwsRelyingParty {
  policy: { Version?: string; Statement: AwsStatement[] };
  /** The IAM OIDC provider (`aws iam get-open-id-connect-provider`): URL without scheme, and its client IDs (accepted `aud`). */
  provider?: { url: string; clientIds: string[] };
  /** Keys found twice in one JSON object of the source text (IAM keeps one silently). */
  duplicateKeys?: { path: string; key: string }[];
}

/** Algorithms IAM accepts for OIDC tokens. */
export const AWS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512'] as const;

/** The audience AWS STS expects by convention. */
export const AWS_STS_AUDIENCE = 'sts.amazonaws.com';

/** Claims IAM exposes as condition keys for a generic OIDC provider (`HOST/PATH:KEY`). */
export const AWS_OIDC_CONDITION_CLAIMS = ['aud', 'sub', 'amr', 'azp'] as const;

const ASSUME = 'sts:AssumeRoleWithWebIdentity';
const TAG_SESSION = 'sts:TagSession';
const TAGS_CLAIM = 'https://aws.amazon.com/tags';
const DENIED = (action: string) => `AccessDenied: Not authorized to perform ${action}`;

/**
 * Reads an AWS configuration: a trust policy document (`{"Version", "Statement"}`), the output of
 * `aws iam get-role` (`{"Role": {"AssumeRolePolicyDocument": …}}`), or
 * `{"TrustPolicy": …, "OpenIDConnectProvider": {"Url", "ClientIDList"}}`. Give the JSON `source`
 * to detect keys written twice.
 */
export function parseAwsConfig(raw: unknown, options: { source?: string } = {}): AwsRelyingParty {
  if (!isRecord(raw)) throw configError('aws: expected a JSON trust policy document ({"Version": "2012-10-17", "Statement": [...]})');
  let doc: unknown = raw;
  let providerRaw: unknown;
  if (isRecord(raw.Role)) doc = raw.Role.AssumeRolePolicyDocument;
  else if (raw.TrustPolicy !== undefined || raw.AssumeRolePolicyDocument !== undefined) {
    doc = raw.TrustPolicy ?? raw.AssumeRolePolicyDocument;
    providerRaw = raw.OpenIDConnectProvider ?? raw.Provider;
  }
  if (typeof doc === 'string') {
    try {
      doc = JSON.parse(decodeURIComponent(doc));
    } catch {
      throw configError('aws: AssumeRolePolicyDocument is a string that is not JSON');
    }
  }
  if (!isRecord(doc) || doc.Statement === undefined) throw configError('aws: the trust policy has no "Statement"');
  const list = Array.isArray(doc.Statement) ? doc.Statement : [doc.Statement];
  const statements: AwsStatement[] = list.map((s, i) => {
    if (!isRecord(s) || typeof s.Effect !== 'string') throw configError(`aws: Statement[${i}] needs an "Effect" of "Allow" or "Deny"`);
    if (s.Condition !== undefined) {
      if (!isRecord(s.Condition) || !Object.values(s.Condition).every(isRecord)) {
        throw configError(`aws: Statement[${i}].Condition must map operators to {"key": value(s)} objects`);
      }
    }
    return s as unknown as AwsStatement;
  });
  let provider: AwsRelyingParty['provider'];
  if (isRecord(providerRaw)) {
    const url = providerRaw.Url ?? providerRaw.url;
    const ids = stringList(providerRaw.ClientIDList ?? providerRaw.clientIds) ?? [];
    if (typeof url !== 'string') throw configError('aws: OpenIDConnectProvider.Url must be a string');
    provider = { url: url.replace(/^https:\/\//, ''), clientIds: ids };
  }
  const duplicateKeys = options.source ? findDuplicateKeys(options.source) : [];
  return {
    policy: { ...(typeof doc.Version === 'string' ? { Version: doc.Version } : {}), Statement: statements },
    ...(provider ? { provider } : {}),
    ...(duplicateKeys.length ? { duplicateKeys } : {}),
  };
}

/** The IAM provider name for an issuer (`https://host/path` → `host/path`), or why there can be none. */
export function awsProviderPath(issuer: string): { path?: string; problem?: string } {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    return { problem: `iss ${q(issuer)} is not a URL` };
  }
  if (url.protocol !== 'https:') return { problem: `iss ${q(issuer)} is not https: an IAM OIDC provider URL must start with https://` };
  if (url.port) return { problem: `iss ${q(issuer)} has a port: an IAM OIDC provider URL cannot have one` };
  if (url.search || url.hash) return { problem: `iss ${q(issuer)} has a query or fragment: an IAM provider URL cannot` };
  // The raw text after the scheme: IAM compares it as written, so a trailing slash matters.
  return { path: issuer.slice('https://'.length) };
}

function list(value: unknown): string[] {
  if (value === undefined) return [];
  if (Array.isArray(value)) return value.map((v) => String(v));
  return [String(value)];
}

/** IAM-style wildcard match for action names and ARNs (case-insensitive for actions). */
function actionMatches(pattern: string, action: string): boolean {
  return glob(pattern.toLowerCase(), action.toLowerCase());
}

function statementActions(s: AwsStatement, action: string): { ok: boolean; message: string } {
  if (s.Action !== undefined) {
    const actions = list(s.Action);
    const ok = actions.some((a) => actionMatches(a, action));
    return { ok, message: `Action ${actions.map(q).join(', ')} ${ok ? 'allows' : 'does not include'} ${action}` };
  }
  if (s.NotAction !== undefined) {
    const not = list(s.NotAction);
    const ok = !not.some((a) => actionMatches(a, action));
    return { ok, message: `NotAction ${not.map(q).join(', ')} ${ok ? 'leaves' : 'excludes'} ${action}` };
  }
  return { ok: false, message: 'statement has no Action' };
}

interface PrincipalMatch {
  ok: boolean;
  message: string;
  detail?: string;
  flag?: 'warning' | 'unknown';
}

const OIDC_ARN = /^arn:aws[a-z-]*:iam::(\d{12}):oidc-provider\/(.+)$/i;

function principalMatches(s: AwsStatement, providerPath: string | undefined): PrincipalMatch {
  if (s.NotPrincipal !== undefined) return { ok: true, message: 'NotPrincipal is not simulated', flag: 'unknown' };
  const p = s.Principal;
  if (p === '*' || (isRecord(p) && p.AWS === '*')) {
    return {
      ok: true,
      message: 'Principal "*": any principal, including every OIDC provider of the account',
      detail: 'name the provider instead: "Principal": {"Federated": "arn:aws:iam::ACCOUNT:oidc-provider/HOST"}',
      flag: 'warning',
    };
  }
  const federated = isRecord(p) ? list(p.Federated) : [];
  if (federated.length === 0) return { ok: false, message: 'Principal names no Federated (OIDC) provider' };
  if (!providerPath) return { ok: false, message: `Principal.Federated ${federated.map(q).join(', ')}: no provider can match this issuer` };
  for (const arn of federated) {
    const m = OIDC_ARN.exec(arn);
    if (m && m[2] === providerPath) return { ok: true, message: `Principal.Federated ${q(arn)}` };
  }
  const near = federated
    .map((arn) => OIDC_ARN.exec(arn)?.[2])
    .filter((x): x is string => x !== undefined)
    .map((path) => ({ path, cmp: compareIssuer(`https://${path}`, `https://${providerPath}`) }))[0];
  return {
    ok: false,
    message: `Principal.Federated ${federated.map(q).join(', ')} is not the provider of this issuer (${q(providerPath)})`,
    ...(near?.cmp.diagnosis
      ? { detail: `${near.cmp.diagnosis}; the ARN must end in oidc-provider/${providerPath}` }
      : { detail: `the ARN must end in oidc-provider/${providerPath}` }),
  };
}

interface ParsedOperator {
  set?: 'ForAnyValue' | 'ForAllValues';
  base: string;
  ifExists: boolean;
  negated: boolean;
}

const BASE_OPERATORS = [
  'StringEquals',
  'StringNotEquals',
  'StringEqualsIgnoreCase',
  'StringNotEqualsIgnoreCase',
  'StringLike',
  'StringNotLike',
  'Null',
];

/** Splits `ForAnyValue:StringLikeIfExists` into its parts; `undefined` for operators not simulated. */
export function parseAwsOperator(operator: string): ParsedOperator | undefined {
  let rest = operator;
  let set: ParsedOperator['set'];
  const m = /^(ForAnyValue|ForAllValues):(.*)$/i.exec(rest);
  if (m) {
    set = (m[1] as string).toLowerCase() === 'foranyvalue' ? 'ForAnyValue' : 'ForAllValues';
    rest = m[2] as string;
  }
  let ifExists = false;
  if (/IfExists$/i.test(rest) && !/^Null/i.test(rest)) {
    ifExists = true;
    rest = rest.slice(0, -'IfExists'.length);
  }
  const base = BASE_OPERATORS.find((b) => b.toLowerCase() === rest.toLowerCase());
  if (!base) return undefined;
  return { ...(set ? { set } : {}), base, ifExists, negated: base.includes('Not') };
}

function valueMatches(base: string, policyValue: string, requestValue: string): boolean {
  switch (base) {
    case 'StringEquals':
    case 'StringNotEquals':
      return policyValue === requestValue;
    case 'StringEqualsIgnoreCase':
    case 'StringNotEqualsIgnoreCase':
      return policyValue.toLowerCase() === requestValue.toLowerCase();
    default:
      return glob(policyValue, requestValue);
  }
}

interface RequestKey {
  /** Values of the key in the request; `undefined` when the key is not in the request context. */
  values: string[] | undefined;
  /** Why the key is absent, when it is. */
  absentBecause?: string;
  /** Which claim it reads, for messages. */
  claim?: string;
  /** Not simulated (a global key such as aws:SourceIp). */
  unknown?: boolean;
}

function resolveKey(key: string, token: DecodedToken, providerPath: string | undefined): RequestKey {
  const lower = key.toLowerCase();
  if (providerPath && lower.startsWith(`${providerPath.toLowerCase()}:`)) {
    const claim = key.slice(providerPath.length + 1);
    const c = claim.toLowerCase();
    if (!(AWS_OIDC_CONDITION_CLAIMS as readonly string[]).includes(c)) {
      return {
        values: undefined,
        claim,
        absentBecause: `IAM makes only ${AWS_OIDC_CONDITION_CLAIMS.join(', ')} of an OIDC token available as condition keys; "${claim}" never reaches the policy (pin it through sub, or use session tags)`,
      };
    }
    const v = c === 'aud' ? tokenAudiences(token) : stringList(token.claims[c]);
    return v && v.length > 0 ? { values: v, claim: c } : { values: undefined, claim: c, absentBecause: `the token has no ${c} claim` };
  }
  const tags = token.claims[TAGS_CLAIM];
  if (lower.startsWith('aws:requesttag/')) {
    const name = key.slice('aws:RequestTag/'.length);
    const principal = isRecord(tags) && isRecord(tags.principal_tags) ? tags.principal_tags : undefined;
    const v = principal ? stringList(principal[name]) : undefined;
    return v
      ? { values: v, claim: `session tag ${name}` }
      : { values: undefined, absentBecause: `the token carries no session tag ${q(name)}` };
  }
  if (lower === 'aws:tagkeys') {
    const principal = isRecord(tags) && isRecord(tags.principal_tags) ? Object.keys(tags.principal_tags) : [];
    return principal.length
      ? { values: principal, claim: 'session tag keys' }
      : { values: undefined, absentBecause: 'the token carries no session tags' };
  }
  if (lower.includes(':') && !lower.startsWith('aws:')) {
    return {
      values: undefined,
      absentBecause: `${q(key)} belongs to another provider than this token's issuer (${q(providerPath ?? '?')})`,
    };
  }
  return { values: undefined, unknown: true, absentBecause: `${q(key)} is not simulated` };
}

interface ConditionOutcome {
  ok: boolean;
  message: string;
  detail?: string;
  flag?: 'warning' | 'unknown';
}

function evaluateCondition(
  operator: string,
  key: string,
  rawValue: unknown,
  token: DecodedToken,
  providerPath: string | undefined,
): ConditionOutcome {
  const policyValues = list(rawValue);
  const shown = policyValues.map(q).join(' or ');
  const message = `condition ${operator} ${q(key)} = ${shown}`;
  const op = parseAwsOperator(operator);
  if (!op) return { ok: true, message, detail: `operator ${q(operator)} is not simulated`, flag: 'unknown' };
  const req = resolveKey(key, token, providerPath);
  if (req.unknown) return { ok: true, message, detail: req.absentBecause ?? 'not simulated', flag: 'unknown' };
  if (op.base === 'Null') {
    const wantAbsent = policyValues.some((v) => v.toLowerCase() === 'true');
    const absent = req.values === undefined;
    return { ok: absent === wantAbsent, message, detail: `the key is ${absent ? 'absent' : 'present'}` };
  }
  const claimName = req.claim ?? key;
  if (req.values === undefined) {
    if (op.set === 'ForAllValues') {
      return {
        ok: true,
        message,
        detail: `ForAllValues is true when the key is absent (${req.absentBecause}): this condition restricts nothing`,
        flag: 'warning',
      };
    }
    if (op.ifExists) return { ok: true, message, detail: `IfExists: the key is absent (${req.absentBecause})`, flag: 'warning' };
    if (op.negated && !op.set) {
      return {
        ok: true,
        message,
        detail: `a negated operator is true when the key is absent (${req.absentBecause}): it restricts nothing`,
        flag: 'warning',
      };
    }
    return { ok: false, message, detail: `never matches: ${req.absentBecause}` };
  }
  const values = req.values;
  const matchAny = (v: string) => policyValues.some((p) => valueMatches(op.base, p, v));
  const single = (v: string) => (op.negated ? !matchAny(v) : matchAny(v));
  let ok: boolean;
  if (op.set === 'ForAllValues') ok = values.every(single);
  else if (op.set === 'ForAnyValue') ok = values.some(single);
  else ok = op.negated ? !values.some(matchAny) : values.some(matchAny);
  const actual = values.length === 1 ? q(values[0]) : `[${values.map(q).join(', ')}]`;
  if (ok) {
    const noWildcard = op.base.includes('Like') && policyValues.every((p) => !/[*?]/.test(p));
    return {
      ok,
      message,
      ...(noWildcard ? { detail: `${op.base} without a wildcard compares exactly, like StringEquals` } : {}),
      ...(op.set === 'ForAllValues'
        ? { flag: 'warning' as const, detail: 'ForAllValues passes, but would also pass a token without the claim' }
        : {}),
    };
  }
  let why = `token ${claimName} is ${actual}`;
  const exact = policyValues.length === 1 ? (policyValues[0] as string) : undefined;
  if (exact !== undefined && values.length === 1 && !op.negated) {
    const diff = describeSubjectDifference(exact, values[0] as string);
    if (op.base === 'StringEquals' && /[*?]/.test(exact)) why += ' (StringEquals does not expand wildcards: use StringLike)';
    else if (diff) why += ` (${diff})`;
    else if (exact.toLowerCase() === (values[0] as string).toLowerCase()) why += ' (case differs; values are case-sensitive)';
  }
  if (op.negated) why = `token ${claimName} is ${actual}, which the negated operator excludes`;
  const near = claimName === 'aud' && !op.negated ? nearMiss(values[0] as string, policyValues) : undefined;
  if (near) why += `; did you mean ${q(near)}?`;
  return { ok, message, detail: why };
}

interface StatementOutcome {
  index: number;
  label: string;
  matches: boolean;
  principalOk: boolean;
  checks: ExplainCheck[];
}

function evaluateStatement(
  s: AwsStatement,
  index: number,
  action: string,
  token: DecodedToken,
  providerPath: string | undefined,
): StatementOutcome {
  const label = `statement ${index + 1}${s.Sid ? ` (${s.Sid})` : ''}`;
  const checks: ExplainCheck[] = [];
  const answer = DENIED(action);
  const pr = principalMatches(s, providerPath);
  checks.push({
    id: 'aws.principal',
    ok: pr.ok,
    message: `${label}: ${pr.message}`,
    ...(pr.detail ? { detail: pr.detail } : {}),
    ...(pr.flag ? { flag: pr.flag } : {}),
    ...(pr.ok ? {} : { answer }),
  });
  const ac = statementActions(s, action);
  checks.push({
    id: action === ASSUME ? 'aws.action' : 'aws.tag-session',
    ok: ac.ok,
    message: `${label}: ${ac.message}`,
    ...(ac.ok ? {} : { answer }),
  });
  for (const [operator, block] of Object.entries(s.Condition ?? {})) {
    for (const [key, value] of Object.entries(block)) {
      const c = evaluateCondition(operator, key, value, token, providerPath);
      checks.push({
        id: 'aws.condition',
        ok: c.ok,
        message: `${label}: ${c.message}`,
        ...(c.detail ? { detail: c.detail } : {}),
        ...(c.flag ? { flag: c.flag } : {}),
        ...(c.ok ? {} : { answer }),
      });
    }
  }
  return { index, label, matches: checks.every((c) => c.ok), principalOk: pr.ok, checks };
}

/** Decides one action (AssumeRoleWithWebIdentity or TagSession) over all statements, IAM-style: an explicit Deny wins. */
function decide(rp: AwsRelyingParty, action: string, token: DecodedToken, providerPath: string | undefined): ExplainCheck[] {
  const outcomes = rp.policy.Statement.map((s, i) => ({ s, o: evaluateStatement(s, i, action, token, providerPath) }));
  const deny = outcomes.find(({ s, o }) => s.Effect === 'Deny' && o.matches);
  if (deny) {
    return [
      ...deny.o.checks,
      {
        id: 'aws.deny',
        ok: false,
        message: `${deny.o.label}: an explicit Deny matches ${action}`,
        detail: 'an explicit Deny overrides every Allow',
        answer: DENIED(action),
      },
    ];
  }
  const allows = outcomes.filter(({ s }) => s.Effect === 'Allow');
  const allowed = allows.find(({ o }) => o.matches);
  if (allowed) return allowed.o.checks;
  if (allows.length === 0) {
    return [{ id: 'aws.statement', ok: false, message: `no Allow statement for ${action}`, answer: DENIED(action) }];
  }
  // Show every statement that names this provider; if none does, every Allow statement's principal.
  const relevant = allows.filter(({ o }) => o.principalOk);
  const shown = relevant.length ? relevant : allows;
  return shown.flatMap(({ o }) => (relevant.length ? o.checks : o.checks.filter((c) => c.id === 'aws.principal')));
}

/**
 * Explains whether AWS STS would let a token assume a role (`AssumeRoleWithWebIdentity`): the
 * provider for the token's issuer, the token's audience against the provider's client IDs, time
 * (IAM accepts a token up to about 5 minutes after `exp`), algorithm, then the trust policy —
 * and `sts:TagSession` when the token carries session tags.
 */
export function explainAws(token: DecodedToken, rp: AwsRelyingParty, options: ExplainOptions = {}): ExplainResult {
  const now = options.now ?? new Date();
  const checks: ExplainCheck[] = [];
  const iss = typeof token.claims.iss === 'string' ? token.claims.iss : '';
  const { path: providerPath, problem } = awsProviderPath(iss);
  const noProvider = `InvalidIdentityToken: No OpenIDConnect provider found in your account for ${iss}`;
  if (problem) {
    checks.push({
      id: 'issuer',
      ok: false,
      message: `iss: ${problem}`,
      detail: 'serve Tessera at an https URL without a port and set its public URL (TESSERA_PUBLIC_URL) so iss matches',
      answer: noProvider,
    });
  } else if (rp.provider) {
    const cmp = compareIssuer(`https://${rp.provider.url}`, iss);
    const exact = rp.provider.url === providerPath;
    checks.push(
      exact
        ? { id: 'issuer', ok: true, message: `iss: ${q(iss)} has an IAM OIDC provider (${rp.provider.url})` }
        : {
            id: 'issuer',
            ok: false,
            message: `iss: ${q(iss)} has no IAM OIDC provider; the account's provider is ${q(rp.provider.url)}`,
            ...(cmp.diagnosis ? { detail: cmp.diagnosis } : {}),
            answer: noProvider,
          },
    );
  } else {
    const federated = rp.policy.Statement.flatMap((s) => (isRecord(s.Principal) ? list(s.Principal.Federated) : []));
    const named = federated.some((arn) => OIDC_ARN.exec(arn)?.[2] === providerPath);
    checks.push({
      id: 'issuer',
      ok: true,
      message: `iss: ${q(iss)} → IAM provider ${q(providerPath)}`,
      ...(named ? {} : { detail: 'no statement names this provider; see Principal below' }),
    });
  }
  if (rp.provider && rp.provider.clientIds.length > 0) {
    const aud = tokenAudiences(token);
    const ok = aud.some((a) => rp.provider?.clientIds.includes(a));
    const near = aud.map((a) => nearMiss(a, rp.provider?.clientIds ?? [])).find((x) => x);
    checks.push(
      ok
        ? { id: 'audience', ok: true, message: `aud: ${aud.map(q).join(', ')} is in the provider's client IDs` }
        : {
            id: 'audience',
            ok: false,
            message: `aud: ${aud.map(q).join(', ') || '(none)'} is not in the provider's client IDs (${rp.provider.clientIds.map(q).join(', ')})`,
            detail: near
              ? `did you mean ${q(near)}?`
              : `add it: aws iam add-client-id-to-open-id-connect-provider --client-id ${aud[0] ?? AWS_STS_AUDIENCE}`,
            answer: 'InvalidIdentityToken: Incorrect token audience',
          },
    );
  }
  checks.push(algorithmCheck(token, AWS_ALGORITHMS, 'AWS', 'InvalidIdentityToken: the token is not signed with a supported algorithm'));
  checks.push(
    ...timeChecks(token, now, {
      expLeeway: 300,
      nbfLeeway: 300,
      iatLeeway: 300,
      who: 'AWS',
      leewayNote: 'IAM accepts a token up to about 5 minutes after exp',
      answers: {
        expired: (exp, t) => `ExpiredTokenException: Token expired: current date/time ${t} must be before the expiration date/time ${exp}`,
        notYetValid: 'InvalidIdentityToken: the token is not yet valid (nbf)',
        issuedInFuture: 'InvalidIdentityToken: the token was issued in the future (iat)',
        missingExp: 'InvalidIdentityToken: the token has no expiration',
      },
    }),
  );
  for (const d of rp.duplicateKeys ?? []) {
    checks.push({
      id: 'aws.duplicate-key',
      ok: true,
      flag: 'warning',
      message: `${d.path} has ${q(d.key)} twice: only the last one counts`,
      detail: 'merge the two blocks into one; IAM (like JSON.parse) silently keeps one of them',
    });
  }
  checks.push(...decide(rp, ASSUME, token, providerPath));
  const tags = token.claims[TAGS_CLAIM];
  if (tags !== undefined) {
    const principalTags = isRecord(tags) && isRecord(tags.principal_tags) ? tags.principal_tags : {};
    const entries = Object.entries(principalTags);
    const tooLong = entries.find(([k, v]) => k.length > 128 || (stringList(v) ?? []).some((x) => x.length > 256));
    if (entries.length > 50 || tooLong) {
      checks.push({
        id: 'aws.session-tags',
        ok: false,
        message: `session tags: ${entries.length} tags${tooLong ? `, ${q(tooLong[0])} over the size limit` : ''} (at most 50; keys 128, values 256 characters)`,
        answer: 'PackedPolicyTooLarge: the session tags exceed the size limit',
      });
    }
    const tagChecks = decide(rp, TAG_SESSION, token, providerPath).map((c) => ({
      ...c,
      id: c.id === 'aws.action' ? 'aws.tag-session' : c.id,
    }));
    const ok = tagChecks.every((c) => c.ok);
    checks.push(
      ok
        ? { id: 'aws.tag-session', ok: true, message: `session tags: ${entries.length} tag(s), and the trust policy allows sts:TagSession` }
        : {
            id: 'aws.tag-session',
            ok: false,
            message: 'session tags: the token carries https://aws.amazon.com/tags but the trust policy does not allow sts:TagSession',
            detail: 'add "sts:TagSession" to the Action of the statement that allows sts:AssumeRoleWithWebIdentity',
            answer: DENIED(TAG_SESSION),
          },
    );
  }
  return verdictOf('aws', checks);
}
