import { CelError, type CompiledCel, compileCel } from '../cel.js';
import { algorithmCheck, audienceCheck, issuerCheck } from './generic.js';
import { issuerProblems } from './issuer.js';
import { configError, isRecord, q, stringList, timeChecks } from './lib.js';
import { describeSubjectDifference } from './subject.js';
import { type DecodedToken, type ExplainCheck, type ExplainOptions, type ExplainResult, verdictOf } from './types.js';

/**
 * Google Cloud workload identity federation: a pool provider (issuer URI, allowed audiences, CEL
 * attribute mapping and condition) and, optionally, the IAM binding that grants the mapped identity
 * something (`principal://…/subject/SUB`, `principalSet://…/attribute.NAME/VALUE`).
 * @see https://cloud.google.com/iam/docs/workload-identity-federation
 */

/** A workload identity pool provider, as `gcloud iam workload-identity-pools providers describe --format=json` prints it. */
export interface GcpRelyingParty {
  /** `projects/NUM/locations/global/workloadIdentityPools/POOL/providers/PROV`: needed for the default audience. */
  name?: string;
  issuerUri: string;
  /** Empty: the default audience (the provider's full resource name). */
  allowedAudiences: string[];
  attributeMapping: Record<string, string>;
  attributeCondition?: string;
  disabled?: boolean;
  /** An IAM member to check the mapped identity against (Tessera's addition; gcloud ignores it). */
  member?: string;
}

/** Limits GCP enforces on attribute mapping and condition. */
export const GCP_LIMITS = {
  /** `google.subject`, bytes. */
  subjectBytes: 127,
  /** One mapping expression, characters. */
  mappingExpression: 2048,
  /** All mapped attributes together, bytes. */
  mappedAttributesBytes: 8192,
  /** The attribute condition, characters. */
  conditionExpression: 4096,
} as const;

const GCP_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512'];
const DENIED = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).";
const REJECTED = 'unauthorized_client: The given credential is rejected by the attribute condition.';
const PROVIDER_NAME =
  /^(?:\/\/iam\.googleapis\.com\/)?(projects\/[^/]+\/locations\/global\/workloadIdentityPools\/[^/]+)\/providers\/[^/]+$/;

/**
 * Reads a GCP provider: the JSON of `gcloud iam workload-identity-pools providers describe`
 * (`{"name", "oidc": {"issuerUri", "allowedAudiences"}, "attributeMapping", "attributeCondition"}`),
 * optionally with `"binding": {"member": "principalSet://…"}` to check an IAM binding too.
 */
export function parseGcpConfig(raw: unknown): GcpRelyingParty {
  if (!isRecord(raw))
    throw configError('gcp: expected the JSON of `gcloud iam workload-identity-pools providers describe … --format=json`');
  const oidc = isRecord(raw.oidc) ? raw.oidc : raw;
  const issuerUri = oidc.issuerUri ?? oidc.issuer_uri;
  if (typeof issuerUri !== 'string') throw configError('gcp: "oidc.issuerUri" must be a string (the provider must be an OIDC provider)');
  const allowedAudiences = stringList(oidc.allowedAudiences ?? oidc.allowed_audiences ?? []);
  if (!allowedAudiences) throw configError('gcp: "oidc.allowedAudiences" must be a list of strings');
  const mappingRaw = raw.attributeMapping ?? raw.attribute_mapping ?? {};
  if (!isRecord(mappingRaw) || !Object.values(mappingRaw).every((v) => typeof v === 'string')) {
    throw configError('gcp: "attributeMapping" must map attribute names to CEL expressions (strings)');
  }
  const condition = raw.attributeCondition ?? raw.attribute_condition;
  if (condition !== undefined && typeof condition !== 'string')
    throw configError('gcp: "attributeCondition" must be a CEL expression (a string)');
  const binding = isRecord(raw.binding) ? raw.binding : undefined;
  const member = binding?.member ?? raw.member;
  if (member !== undefined && typeof member !== 'string') throw configError('gcp: "binding.member" must be a string');
  return {
    ...(typeof raw.name === 'string' ? { name: raw.name } : {}),
    issuerUri,
    allowedAudiences,
    attributeMapping: mappingRaw as Record<string, string>,
    ...(condition !== undefined && condition !== '' ? { attributeCondition: condition } : {}),
    ...(raw.disabled === true || raw.state === 'DELETED' ? { disabled: true } : {}),
    ...(typeof member === 'string' ? { member } : {}),
  };
}

/** The audiences GCP accepts when `allowedAudiences` is empty: the provider's full resource name, with `//` or `https://`. */
export function gcpDefaultAudiences(providerName: string): string[] {
  const name = providerName.replace(/^\/\/iam\.googleapis\.com\//, '').replace(/^https:\/\/iam\.googleapis\.com\//, '');
  return [`//iam.googleapis.com/${name}`, `https://iam.googleapis.com/${name}`];
}

function bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

const ATTRIBUTE_KEY = /^(google\.(subject|groups|display_name|profile_photo|posix_username)|attribute\.[a-z0-9_]{1,100})$/;

/** The mapped attributes, as GCP computes them from the token. */
export interface GcpMappedAttributes {
  google: Record<string, unknown>;
  attribute: Record<string, unknown>;
}

function mapAttributes(token: DecodedToken, rp: GcpRelyingParty, checks: ExplainCheck[]): GcpMappedAttributes | undefined {
  const google: Record<string, unknown> = {};
  const attribute: Record<string, unknown> = {};
  let failed = false;
  if (rp.attributeMapping['google.subject'] === undefined) {
    checks.push({
      id: 'gcp.mapping',
      ok: false,
      message: 'attribute mapping: google.subject is not mapped (it is required)',
      detail: 'map it: --attribute-mapping=google.subject=assertion.sub',
      answer: 'invalid_request: google.subject is not mapped by the provider (the provider configuration is invalid)',
    });
    failed = true;
  }
  let total = 0;
  for (const [key, expression] of Object.entries(rp.attributeMapping)) {
    const label = `attribute mapping ${key} = ${expression.length > 80 ? `${expression.slice(0, 80)}…` : expression}`;
    if (!ATTRIBUTE_KEY.test(key)) {
      checks.push({
        id: 'gcp.mapping',
        ok: false,
        message: `${label}: ${q(key)} is not a valid attribute name`,
        detail: 'use google.subject, google.groups or attribute.NAME (lower-case letters, digits, _)',
        answer: `invalid_argument: invalid attribute name ${q(key)}`,
      });
      failed = true;
      continue;
    }
    if (expression.length > GCP_LIMITS.mappingExpression) {
      checks.push({
        id: 'gcp.mapping',
        ok: false,
        message: `${label}: ${expression.length} characters, over GCP's ${GCP_LIMITS.mappingExpression}`,
        answer: 'invalid_argument: attribute mapping expression too long',
      });
      failed = true;
      continue;
    }
    let value: unknown;
    try {
      value = compileCel(expression, { variables: ['assertion'] }).evaluate({ assertion: token.claims });
    } catch (e) {
      const disabled = e instanceof CelError && /disabled/.test(e.message);
      if (key === 'google.subject' || disabled) {
        checks.push({
          id: 'gcp.mapping',
          ok: disabled,
          message: `${label}: ${disabled ? 'not simulated' : 'cannot be evaluated'}`,
          detail: (e as Error).message,
          ...(disabled
            ? { flag: 'unknown' as const }
            : { answer: 'invalid_grant: the attribute mapping for google.subject failed on this token' }),
        });
        if (!disabled) failed = true;
      } else {
        checks.push({
          id: 'gcp.mapping',
          ok: true,
          flag: 'warning',
          message: `${label}: not set for this token`,
          detail: (e as Error).message,
        });
      }
      continue;
    }
    const list = Array.isArray(value) ? value : [value];
    if (!list.every((v) => typeof v === 'string')) {
      checks.push({
        id: 'gcp.mapping',
        ok: false,
        message: `${label}: evaluates to ${q(value)}, not a string`,
        detail: 'wrap it: string(assertion.claim)',
        answer: 'invalid_grant: a mapped attribute is not a string',
      });
      failed = true;
      continue;
    }
    total += bytes(key) + list.reduce((n, v) => n + bytes(v as string), 0);
    const [ns, name] = key.split('.') as [string, string];
    (ns === 'google' ? google : attribute)[name] = value;
    if (key === 'google.subject' && bytes(value as string) > GCP_LIMITS.subjectBytes) {
      checks.push({
        id: 'gcp.subject-length',
        ok: false,
        message: `${label}: ${bytes(value as string)} bytes, over GCP's limit of ${GCP_LIMITS.subjectBytes}`,
        detail: 'map a shorter value (assertion.deployment_id), or shorten the deployment and environment names',
        answer:
          'invalid_request: The size of mapped attribute google.subject exceeds the 127 bytes limit. Either modify your attribute mapping or the incoming assertion to produce a mapped attribute that is less than 127 bytes.',
      });
      failed = true;
      continue;
    }
    checks.push({ id: 'gcp.mapping', ok: true, message: `${label} → ${q(value)}` });
  }
  if (total > GCP_LIMITS.mappedAttributesBytes) {
    checks.push({
      id: 'gcp.mapping',
      ok: false,
      message: `attribute mapping: ${total} bytes of mapped attributes, over GCP's ${GCP_LIMITS.mappedAttributesBytes}`,
      answer: 'invalid_request: the mapped attributes exceed the 8 KB limit',
    });
    failed = true;
  }
  return failed ? undefined : { google, attribute };
}

/**
 * Renames a top-level identifier outside string literals. cel-js pre-registers `google` (for the
 * `google.protobuf` types), so GCP's `google.subject` is evaluated as `google_.subject`.
 */
export function renameCelIdentifier(expression: string, from: string, to: string): string {
  let out = '';
  let i = 0;
  while (i < expression.length) {
    const c = expression[i] as string;
    if (c === '"' || c === "'") {
      const triple = expression.startsWith(c.repeat(3), i);
      const close = triple ? c.repeat(3) : c;
      let j = i + close.length;
      while (j < expression.length && !expression.startsWith(close, j)) j += expression[j] === '\\' ? 2 : 1;
      out += expression.slice(i, j + close.length);
      i = j + close.length;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      let j = i;
      while (j < expression.length && /[A-Za-z0-9_]/.test(expression[j] as string)) j++;
      const word = expression.slice(i, j);
      const prev = out.trimEnd().slice(-1);
      out += word === from && prev !== '.' ? to : word;
      i = j;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

const GOOGLE = 'google_';

function conditionCheck(token: DecodedToken, rp: GcpRelyingParty, mapped: GcpMappedAttributes): ExplainCheck {
  const expr = rp.attributeCondition;
  if (expr === undefined) {
    return {
      id: 'gcp.condition',
      ok: true,
      flag: 'warning',
      message: 'attribute condition: none — every token from this issuer with an accepted audience gets through',
      detail:
        'pin the deployment: --attribute-condition=\'assertion.sub == "ws:…" && assertion.deployment_id == "…"\' (GCP requires a condition for shared issuers)',
    };
  }
  const label = `attribute condition ${expr.length > 160 ? `${expr.slice(0, 160)}…` : expr}`;
  if (expr.length > GCP_LIMITS.conditionExpression) {
    return {
      id: 'gcp.condition',
      ok: false,
      message: `${label}: ${expr.length} characters, over GCP's ${GCP_LIMITS.conditionExpression}`,
      answer: 'invalid_argument: attribute condition too long',
    };
  }
  let result: unknown;
  try {
    result = compileGcpCondition(expr).evaluate({ assertion: token.claims, [GOOGLE]: mapped.google, attribute: mapped.attribute });
  } catch (e) {
    const message = (e as Error).message.replaceAll(GOOGLE, 'google');
    if (e instanceof CelError && /disabled/.test(e.message)) {
      return { id: 'gcp.condition', ok: true, flag: 'unknown', message: `${label}: not simulated`, detail: message };
    }
    return { id: 'gcp.condition', ok: false, message: `${label}: error while evaluating`, detail: message, answer: REJECTED };
  }
  if (result === true) return { id: 'gcp.condition', ok: true, message: `${label}: true` };
  // Say which literal the token missed, when the condition pins sub with ==.
  const pinned = /(?:assertion\.sub|google\.subject)\s*==\s*(["'])(.*?)\1/.exec(expr)?.[2];
  const sub = typeof token.claims.sub === 'string' ? token.claims.sub : undefined;
  const diff = pinned !== undefined && sub !== undefined ? describeSubjectDifference(pinned, sub) : undefined;
  return {
    id: 'gcp.condition',
    ok: false,
    message: `${label}: ${q(result)}`,
    detail: sub !== undefined ? `token sub is ${q(sub)}${diff ? ` (${diff})` : ''}` : 'the token has no sub',
    answer: REJECTED,
  };
}

/**
 * Compiles a GCP attribute condition (variables `assertion`, `google`, `attribute`) with
 * `@tessera/verify`'s CEL evaluator.
 * @throws {CelError} when it does not compile.
 */
export function compileGcpCondition(expression: string): CompiledCel {
  return compileCel(renameCelIdentifier(expression, 'google', GOOGLE), { variables: ['assertion', GOOGLE, 'attribute'] });
}

function memberCheck(member: string, rp: GcpRelyingParty, mapped: GcpMappedAttributes): ExplainCheck {
  const m =
    /^(principal|principalSet):\/\/iam\.googleapis\.com\/(projects\/[^/]+\/locations\/global\/workloadIdentityPools\/[^/]+)\/(.*)$/.exec(
      member,
    );
  if (!m) {
    return {
      id: 'gcp.binding',
      ok: false,
      message: `binding ${q(member)}: not a workload identity pool principal`,
      detail:
        'expected principal://iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/POOL/subject/SUB or principalSet://…/attribute.NAME/VALUE',
      answer: DENIED,
    };
  }
  const [, kind, pool, rest] = m as unknown as [string, string, string, string];
  const providerPool = rp.name ? PROVIDER_NAME.exec(rp.name)?.[1] : undefined;
  if (providerPool && providerPool !== pool) {
    return {
      id: 'gcp.binding',
      ok: false,
      message: `binding ${q(member)}: names pool ${q(pool)}, the provider is in ${q(providerPool)}`,
      answer: DENIED,
    };
  }
  const label = `binding ${member}`;
  if (kind === 'principal') {
    const s = /^subject\/(.+)$/.exec(rest)?.[1];
    const subject = mapped.google.subject;
    if (s === undefined) return { id: 'gcp.binding', ok: false, message: `${label}: expected …/subject/SUBJECT`, answer: DENIED };
    const diff = typeof subject === 'string' ? describeSubjectDifference(s, subject) : undefined;
    return s === subject
      ? { id: 'gcp.binding', ok: true, message: `${label}: google.subject matches` }
      : { id: 'gcp.binding', ok: false, message: `${label}: google.subject is ${q(subject)}${diff ? ` (${diff})` : ''}`, answer: DENIED };
  }
  if (rest === '*') {
    return {
      id: 'gcp.binding',
      ok: true,
      flag: 'warning',
      message: `${label}: every identity of the pool`,
      detail: 'bind a principalSet on an attribute that pins the deployment instead',
    };
  }
  const group = /^group\/(.+)$/.exec(rest)?.[1];
  if (group !== undefined) {
    const groups = stringList(mapped.google.groups) ?? [];
    return groups.includes(group)
      ? { id: 'gcp.binding', ok: true, message: `${label}: google.groups contains it` }
      : { id: 'gcp.binding', ok: false, message: `${label}: google.groups is ${q(groups)}`, answer: DENIED };
  }
  const attr = /^attribute\.([a-z0-9_]+)\/(.+)$/.exec(rest);
  if (attr) {
    const [, name, value] = attr as unknown as [string, string, string];
    const actual = mapped.attribute[name];
    const ok = Array.isArray(actual) ? actual.includes(value) : actual === value;
    return ok
      ? { id: 'gcp.binding', ok: true, message: `${label}: attribute.${name} matches` }
      : {
          id: 'gcp.binding',
          ok: false,
          message: `${label}: attribute.${name} is ${actual === undefined ? 'not mapped for this token' : q(actual)}`,
          ...(typeof actual === 'string' && describeSubjectDifference(value, actual)
            ? { detail: describeSubjectDifference(value, actual) as string }
            : {}),
          answer: DENIED,
        };
  }
  return { id: 'gcp.binding', ok: true, flag: 'unknown', message: `${label}: not simulated` };
}

/**
 * Explains whether Google's STS would exchange a token through a workload identity pool provider:
 * provider state, exact issuer (https), audience (allowed audiences, or the provider's resource
 * name by default), algorithm, time, the CEL attribute mapping (`google.subject` required, ≤ 127
 * bytes; each expression ≤ 2,048 characters; ≤ 8 KB in all), the attribute condition, then the IAM
 * binding when one is given. CEL runs on `@tessera/verify`'s evaluator, where `matches()` is
 * disabled: a condition using it is reported as not simulated.
 */
export function explainGcp(token: DecodedToken, rp: GcpRelyingParty, options: ExplainOptions = {}): ExplainResult {
  const now = options.now ?? new Date();
  const checks: ExplainCheck[] = [];
  if (rp.disabled) {
    checks.push({
      id: 'gcp.provider',
      ok: false,
      message: 'provider: disabled or deleted',
      answer:
        'invalid_target: The target service indicated by the "audience" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn\'t exist.',
    });
  }
  const httpsProblem = issuerProblems(rp.issuerUri, { requireHttps: true }).find((p) => p.kind === 'http');
  if (httpsProblem) {
    checks.push({
      id: 'issuer',
      ok: false,
      message: `issuer-uri: ${httpsProblem.message}`,
      detail: 'GCP fetches discovery and keys over https with a publicly trusted certificate (or upload the JWKS with --jwk-json-path)',
      answer: "invalid_grant: Error connecting to the given credential's issuer.",
    });
  }
  checks.push(
    issuerCheck(
      token,
      rp.issuerUri,
      'the provider',
      `invalid_grant: the ID token's issuer ${q(token.claims.iss)} does not match the provider's issuer-uri ${q(rp.issuerUri)}`,
    ),
  );
  let accepted = rp.allowedAudiences;
  let audienceNote: string | undefined;
  if (accepted.length === 0) {
    if (rp.name) {
      accepted = gcpDefaultAudiences(rp.name);
      audienceNote = 'default audience: the provider resource name';
    } else {
      checks.push({
        id: 'audience',
        ok: true,
        flag: 'unknown',
        message: 'aud: allowedAudiences is empty and the provider name is unknown, so the default audience cannot be checked',
        detail: 'include "name" (projects/NUM/locations/global/workloadIdentityPools/POOL/providers/PROV) in the configuration',
      });
    }
  }
  if (accepted.length > 0) {
    const c = audienceCheck(
      token,
      accepted,
      'the provider',
      `invalid_grant: The audience in ID Token ${q(token.claims.aud)} does not match the expected audience.`,
    );
    checks.push(audienceNote && c.ok ? { ...c, message: `${c.message} (${audienceNote})` } : c);
  }
  checks.push(algorithmCheck(token, GCP_ALGORITHMS, 'GCP', 'invalid_grant: the ID token is signed with an unsupported algorithm'));
  checks.push(
    ...timeChecks(token, now, {
      expLeeway: 0,
      nbfLeeway: 60,
      iatLeeway: 60,
      who: 'GCP',
      answers: {
        expired: () => 'invalid_grant: the ID token has expired',
        notYetValid: 'invalid_grant: the ID token is not valid yet',
        missingExp: 'invalid_grant: the ID token has no exp',
      },
    }),
  );
  const mapped = mapAttributes(token, rp, checks);
  if (mapped) {
    checks.push(conditionCheck(token, rp, mapped));
    if (rp.member) checks.push(memberCheck(rp.member, rp, mapped));
  }
  return verdictOf('gcp', checks);
}
