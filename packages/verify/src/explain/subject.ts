/**
 * Reading Tessera's `sub` (template version 1: `label:value` pairs joined by `:`, values
 * percent-encoded so they never contain `:`; by default `ws:WORKSPACE:deployment:NAME:env:ENV`) to
 * say *which part* of a subject differs, and how far a wildcard pattern reaches.
 */

/** What each `sub` label names. */
export const SUBJECT_LABELS: Readonly<Record<string, string>> = Object.freeze({
  ws: 'workspace',
  project: 'project',
  flow: 'flow',
  deployment: 'deployment',
  deployment_id: 'deployment id',
  env: 'environment',
  pool: 'work pool',
});

/** The parts of a Tessera subject: label → decoded value, in order. */
export type SubjectParts = [label: string, value: string][];

function decode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** The `label:value` pairs of a Tessera `sub`, or `undefined` when `sub` has another shape. */
export function parseSubject(sub: string): SubjectParts | undefined {
  const parts = sub.split(':');
  if (parts.length < 2 || parts.length % 2 !== 0) return undefined;
  const out: SubjectParts = [];
  for (let i = 0; i < parts.length; i += 2) {
    const label = parts[i] as string;
    if (!(label in SUBJECT_LABELS)) return undefined;
    out.push([label, decode(parts[i + 1] as string)]);
  }
  return out;
}

/**
 * Which parts of two Tessera subjects differ, in a few words: `environment differs`,
 * `deployment and environment differ`, `case differs`, `template differs (…)`. `undefined` when
 * equal or not both Tessera subjects.
 */
export function describeSubjectDifference(expected: string, actual: string): string | undefined {
  if (expected === actual) return undefined;
  if (expected.toLowerCase() === actual.toLowerCase()) return 'case differs';
  const e = parseSubject(expected);
  const a = parseSubject(actual);
  if (!e || !a) return undefined;
  const labels = (p: SubjectParts) => p.map(([l]) => l).join(':');
  if (labels(e) !== labels(a)) {
    return `template differs: the token's sub has ${a.map(([l]) => SUBJECT_LABELS[l]).join(', ')}; expected ${e.map(([l]) => SUBJECT_LABELS[l]).join(', ')}`;
  }
  const parts = e.filter(([, v], i) => a[i]?.[1] !== v).map(([l]) => SUBJECT_LABELS[l] as string);
  if (parts.length === 0) return undefined;
  return `${parts.join(' and ')} ${parts.length === 1 ? 'differs' : 'differ'}`;
}

/**
 * How far a wildcard in a subject pattern reaches:
 * - `none`: no wildcard;
 * - `environment`: every environment of one deployment (`…:env:*`);
 * - `deployment`: other deployments of a workspace (`ws:default:deployment:*`, `…:deployment:etl-*`);
 * - `workspace`: any workspace, so any tenant (`ws:*`, `*`);
 * - `foreign`: not a Tessera subject pattern at all (it matches no Tessera token).
 */
export type WildcardReach = 'none' | 'environment' | 'deployment' | 'workspace' | 'foreign';

/**
 * The {@link WildcardReach} of a pattern: the first `label:value` pair the wildcard can change
 * decides (`ws` → workspace, `env` → environment, anything else → deployment). `wildcards` are the
 * characters the relying party treats as wildcards: `*?` for AWS `StringLike`, `*` for Vault globs.
 */
export function wildcardReach(pattern: string, wildcards = '*?'): WildcardReach {
  let index = -1;
  for (let i = 0; i < pattern.length; i++) {
    if (wildcards.includes(pattern[i] as string)) {
      index = i;
      break;
    }
  }
  if (index === -1) return 'none';
  const parts = pattern.slice(0, index).split(':');
  // A pair is fixed once the colon after its value is in the literal prefix.
  const fixedPairs = Math.floor((parts.length - 1) / 2);
  const fixed = new Set<string>();
  for (let i = 0; i < fixedPairs; i++) {
    const l = parts[2 * i] as string;
    if (!(l in SUBJECT_LABELS)) return 'foreign';
    fixed.add(l);
  }
  const label = parts[2 * fixedPairs] as string;
  const labelComplete = parts.length > 2 * fixedPairs + 1;
  if (labelComplete && !(label in SUBJECT_LABELS)) return 'foreign';
  const candidates = (labelComplete ? [label] : Object.keys(SUBJECT_LABELS).filter((l) => l.startsWith(label))).filter(
    (l) => !fixed.has(l),
  );
  if (candidates.length === 0) return 'foreign';
  if (candidates.includes('ws')) return 'workspace';
  if (fixed.has('deployment') || fixed.has('deployment_id') || candidates.every((l) => l === 'env')) return 'environment';
  return 'deployment';
}
