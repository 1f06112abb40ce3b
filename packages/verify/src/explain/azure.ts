import { compareIssuer } from './issuer.js';
import { configError, isRecord, nearMiss, q, stringList, timeChecks, tokenAudiences } from './lib.js';
import { describeSubjectDifference } from './subject.js';
import { type DecodedToken, type ExplainCheck, type ExplainOptions, type ExplainResult, verdictOf } from './types.js';

/**
 * Microsoft Entra federated identity credentials: `{ issuer, subject, audiences }` on an app
 * registration or a user-assigned managed identity, matched exactly and case-sensitively.
 * @see https://learn.microsoft.com/entra/workload-id/workload-identity-federation
 */

/** One federated identity credential. */
export interface AzureCredential {
  name?: string;
  issuer: string;
  subject?: string;
  audiences: string[];
  /** The preview "flexible" form (`claims['sub'] matches '…'`); not available for self-hosted issuers. */
  claimsMatchingExpression?: string;
}

/** One credential, or several (the output of `az … federated-credential list`): any match lets the token in. */
export interface AzureRelyingParty {
  credentials: AzureCredential[];
}

/** The audience Entra expects by convention. */
export const AZURE_AUDIENCE = 'api://AzureADTokenExchange';

/** The most federated identity credentials one application or managed identity may have. */
export const AZURE_MAX_CREDENTIALS = 20;

function parseOne(raw: unknown, i: number): AzureCredential {
  const where = i < 0 ? 'azure' : `azure: credential ${i + 1}`;
  if (!isRecord(raw)) throw configError(`${where}: expected {"issuer", "subject", "audiences"}`);
  if (typeof raw.issuer !== 'string') throw configError(`${where}: "issuer" must be a string`);
  const audiences = stringList(raw.audiences);
  if (!audiences) throw configError(`${where}: "audiences" must be a list of strings`);
  const flexible = isRecord(raw.claimsMatchingExpression) ? raw.claimsMatchingExpression.value : raw.claimsMatchingExpression;
  if (raw.subject !== undefined && raw.subject !== null && typeof raw.subject !== 'string')
    throw configError(`${where}: "subject" must be a string`);
  if (typeof raw.subject !== 'string' && typeof flexible !== 'string') throw configError(`${where}: "subject" must be a string`);
  return {
    ...(typeof raw.name === 'string' ? { name: raw.name } : {}),
    issuer: raw.issuer,
    ...(typeof raw.subject === 'string' ? { subject: raw.subject } : {}),
    audiences,
    ...(typeof flexible === 'string' ? { claimsMatchingExpression: flexible } : {}),
  };
}

/** Reads one federated identity credential (`{"name", "issuer", "subject", "audiences"}`) or a list of them. */
export function parseAzureConfig(raw: unknown): AzureRelyingParty {
  if (Array.isArray(raw)) {
    if (raw.length === 0) throw configError('azure: the list of federated identity credentials is empty');
    return { credentials: raw.map((c, i) => parseOne(c, i)) };
  }
  return { credentials: [parseOne(raw, -1)] };
}

function explainOne(token: DecodedToken, c: AzureCredential, now: Date): ExplainCheck[] {
  const checks: ExplainCheck[] = [];
  const iss = typeof token.claims.iss === 'string' ? token.claims.iss : '';
  const sub = typeof token.claims.sub === 'string' ? token.claims.sub : '';
  const aud = tokenAudiences(token);
  const label = c.name ? `credential ${q(c.name)}: ` : '';
  const noMatch = `AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '${iss}'. Assertion Subject: '${sub}'. Assertion Audience: '${aud.join(',')}'.`;
  if (c.issuer === iss) checks.push({ id: 'issuer', ok: true, message: `${label}issuer ${q(iss)}` });
  else {
    const cmp = compareIssuer(c.issuer, iss);
    checks.push({
      id: 'issuer',
      ok: false,
      message: `${label}issuer ${q(c.issuer)} ≠ token iss ${q(iss)}`,
      ...(cmp.diagnosis ? { detail: `${cmp.diagnosis}; Entra compares the issuer exactly` } : {}),
      answer: noMatch,
    });
  }
  if (c.claimsMatchingExpression !== undefined) {
    checks.push({
      id: 'azure.flexible',
      ok: false,
      message: `${label}claimsMatchingExpression ${q(c.claimsMatchingExpression)}: flexible matching is only available for a few named CI issuers, not a self-hosted issuer`,
      detail: `use an exact subject: "subject": ${q(sub)}`,
      answer: noMatch,
    });
  } else if (c.subject === sub) {
    checks.push({ id: 'subject', ok: true, message: `${label}subject ${q(sub)}` });
  } else {
    const caseOnly = (c.subject ?? '').toLowerCase() === sub.toLowerCase();
    const diff = describeSubjectDifference(c.subject ?? '', sub);
    checks.push({
      id: 'subject',
      ok: false,
      message: `${label}subject ${q(c.subject)} ≠ token sub ${q(sub)}${diff ? ` (${diff})` : ''}`,
      detail: /[*?]/.test(c.subject ?? '')
        ? 'Entra matches the subject exactly: wildcards are plain characters here'
        : 'Entra compares the subject exactly and case-sensitively',
      answer: caseOnly
        ? `AADSTS7002138: No matching federated identity record found for presented assertion subject '${sub}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison.`
        : `AADSTS700213: No matching federated identity record found for presented assertion subject '${sub}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion.`,
    });
  }
  const match = aud.find((a) => c.audiences.includes(a));
  if (match !== undefined) checks.push({ id: 'audience', ok: true, message: `${label}audience ${q(match)}` });
  else {
    const near = aud.map((a) => nearMiss(a, c.audiences)).find((x) => x);
    checks.push({
      id: 'audience',
      ok: false,
      message: `${label}audiences ${c.audiences.map(q).join(', ')} do not include token aud ${aud.map(q).join(', ') || '(none)'}`,
      detail: near
        ? `did you mean ${q(near)}? (compared exactly and case-sensitively)`
        : `ask for the token with identity.token({ audience: ${q(c.audiences[0] ?? AZURE_AUDIENCE)} })`,
      answer: `AADSTS700212: No matching federated identity record found for presented assertion audience '${aud.join(',')}'.`,
    });
  }
  if (c.audiences.length > 1) {
    checks.push({
      id: 'azure.audiences',
      ok: true,
      flag: 'warning',
      message: `${label}${c.audiences.length} audiences: Entra accepts one audience per credential`,
      detail: `keep one, normally ${q(AZURE_AUDIENCE)}`,
    });
  }
  checks.push(
    ...timeChecks(token, now, {
      expLeeway: 300,
      nbfLeeway: 300,
      who: 'Entra',
      leewayNote: 'Entra allows about 5 minutes of clock skew',
      answers: {
        expired: () => 'AADSTS700024: Client assertion is not within its valid time range.',
        notYetValid: 'AADSTS700024: Client assertion is not within its valid time range.',
        missingExp: 'AADSTS700024: Client assertion is not within its valid time range.',
      },
    }),
  );
  return checks;
}

/**
 * Explains whether Entra would accept a token for a federated identity credential: issuer, subject
 * and audience matched exactly and case-sensitively (with the real `AADSTS` code for each kind of
 * mismatch), and the token's time range. With several credentials, the first that matches wins;
 * when none does, the closest one is explained.
 */
export function explainAzure(token: DecodedToken, rp: AzureRelyingParty, options: ExplainOptions = {}): ExplainResult {
  const now = options.now ?? new Date();
  const runs = rp.credentials.map((c) => explainOne(token, c, now));
  const pass = runs.find((checks) => checks.every((c) => c.ok));
  const best = pass ?? runs.reduce((a, b) => (b.filter((c) => c.ok).length > a.filter((c) => c.ok).length ? b : a));
  const checks = [...best];
  if (rp.credentials.length > AZURE_MAX_CREDENTIALS) {
    checks.push({
      id: 'azure.credentials',
      ok: true,
      flag: 'warning',
      message: `${rp.credentials.length} credentials: Entra allows at most ${AZURE_MAX_CREDENTIALS} per application or managed identity`,
    });
  }
  return verdictOf('azure', checks);
}
