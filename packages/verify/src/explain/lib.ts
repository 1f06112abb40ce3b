import { formatDuration, TesseraError } from '@tessera/core';
import type { DecodedToken, ExplainCheck } from './types.js';

/** `"value"`, JSON-quoted so spaces, case and invisible characters show. */
export function q(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

/** A plain JSON object (not an array, not null). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A string or a list of strings as a list; anything else as `undefined`. */
export function stringList(value: unknown): string[] | undefined {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value as string[];
  return undefined;
}

/** The token's audiences: `aud` as a list (RFC 7519 §4.1.3 allows a string or an array). */
export function tokenAudiences(token: DecodedToken): string[] {
  return stringList(token.claims.aud) ?? [];
}

/** A configuration error: exit status 2 in the CLI. */
export function configError(message: string): TesseraError {
  return new TesseraError('ERR_CONFIG', message);
}

/**
 * Edit distance where a swap of two neighbours counts as one edit (optimal string alignment), for
 * spotting typos such as `sts.amazon.com` for `sts.amazonaws.com`.
 */
export function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 32) return Math.abs(a.length - b.length);
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d = new Array<number>(rows * cols).fill(0);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(
        (d[(i - 1) * cols + j] as number) + 1,
        (d[i * cols + j - 1] as number) + 1,
        (d[(i - 1) * cols + j - 1] as number) + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, (d[(i - 2) * cols + j - 2] as number) + 1);
      d[i * cols + j] = v;
    }
  }
  return d[rows * cols - 1] as number;
}

/** The candidate within a few edits of `value` (and not equal to it), if any. */
export function nearMiss(value: string, candidates: readonly string[]): string | undefined {
  let best: { c: string; d: number } | undefined;
  for (const c of candidates) {
    if (c === value) return undefined;
    const d = editDistance(value.toLowerCase(), c.toLowerCase());
    if (d <= Math.max(2, Math.floor(c.length / 5)) && (!best || d < best.d)) best = { c, d };
  }
  return best?.c;
}

/** How a value differs from an expected one, in a few words: `(case differs)`, `(trailing space)`. */
export function describeStringDifference(expected: string, actual: string): string | undefined {
  if (expected === actual) return undefined;
  if (expected.toLowerCase() === actual.toLowerCase()) return 'case differs';
  if (expected.trim() === actual.trim()) return 'whitespace differs';
  if (`${expected}/` === actual || expected === `${actual}/`) return 'trailing slash differs';
  return undefined;
}

/** Rules for the time claims, in seconds. */
export interface TimeRules {
  /** Accepted after `exp`. */
  expLeeway: number;
  /** Accepted before `nbf`. */
  nbfLeeway: number;
  /** How far in the future `iat` may be. `undefined`: `iat` is not checked. */
  iatLeeway?: number;
  /** Who applies these rules, for messages: `AWS`, `Vault`. */
  who: string;
  /** Why the leeway is what it is, e.g. `clock_skew_leeway 60 s`. */
  leewayNote?: string;
  /** `exp` must be present. @default true */
  requireExp?: boolean;
  answers: { expired: (exp: number, now: number) => string; notYetValid: string; issuedInFuture?: string; missingExp?: string };
}

/** A NumericDate claim, or `undefined` when absent or not a number. */
export function numericDate(claims: Record<string, unknown>, name: string): number | undefined {
  const v = claims[name];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function relative(seconds: number): string {
  if (Math.abs(seconds) < 1) return 'just now';
  const abs = formatDuration(Math.abs(seconds) * 1000);
  return seconds >= 0 ? `in ${abs}` : `${abs} ago`;
}

function iso(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
}

/** The `exp`, `nbf` and `iat` checks of a relying party. */
export function timeChecks(token: DecodedToken, now: Date, rules: TimeRules): ExplainCheck[] {
  const t = Math.floor(now.getTime() / 1000);
  const checks: ExplainCheck[] = [];
  const exp = numericDate(token.claims, 'exp');
  const note = rules.leewayNote ? ` (${rules.leewayNote})` : rules.expLeeway ? ` (${rules.who} allows ${rules.expLeeway} s after exp)` : '';
  if (exp === undefined) {
    const required = rules.requireExp ?? true;
    checks.push({
      id: 'expiry',
      ok: !required,
      message: required ? `exp: missing; ${rules.who} requires an expiry` : 'exp: none',
      ...(required && rules.answers.missingExp ? { answer: rules.answers.missingExp } : {}),
    });
  } else if (t > exp + rules.expLeeway) {
    checks.push({
      id: 'expiry',
      ok: false,
      message: `exp: expired ${formatDuration((t - exp) * 1000)} ago${note}`,
      detail: `exp ${iso(exp)}, now ${iso(t)}; ask for a fresh token just before use, or a longer lifetime (identity.token({ lifetime }))`,
      answer: rules.answers.expired(exp, t),
    });
  } else {
    const grace = t > exp;
    checks.push({
      id: 'expiry',
      ok: true,
      message: grace
        ? `exp: expired ${formatDuration((t - exp) * 1000)} ago, within the leeway${note}`
        : `exp: expires ${relative(exp - t)}`,
      detail: `exp ${iso(exp)}`,
      ...(grace ? { flag: 'warning' as const } : {}),
    });
  }
  const nbf = numericDate(token.claims, 'nbf');
  if (nbf !== undefined) {
    if (t + rules.nbfLeeway < nbf) {
      checks.push({
        id: 'not-before',
        ok: false,
        message: `nbf: not valid for another ${formatDuration((nbf - t) * 1000)} (${rules.who} allows ${rules.nbfLeeway} s of skew)`,
        detail: `nbf ${iso(nbf)}, now ${iso(t)}: this clock or the issuer's is wrong`,
        answer: rules.answers.notYetValid,
      });
    } else {
      checks.push({
        id: 'not-before',
        ok: true,
        message:
          t >= nbf
            ? `nbf: valid since ${formatDuration((t - nbf) * 1000)}`
            : `nbf: ${formatDuration((nbf - t) * 1000)} ahead, within the skew`,
      });
    }
  }
  const iat = numericDate(token.claims, 'iat');
  if (iat !== undefined && rules.iatLeeway !== undefined) {
    if (t + rules.iatLeeway < iat) {
      checks.push({
        id: 'issued-at',
        ok: false,
        message: `iat: issued ${formatDuration((iat - t) * 1000)} in the future (${rules.who} allows ${rules.iatLeeway} s of skew)`,
        detail: `iat ${iso(iat)}, now ${iso(t)}: a clock is wrong (check NTP on this host and the issuer)`,
        answer: rules.answers.issuedInFuture ?? rules.answers.notYetValid,
      });
    } else {
      checks.push({ id: 'issued-at', ok: true, message: `iat: issued ${relative(iat - t)}` });
    }
  }
  return checks;
}
