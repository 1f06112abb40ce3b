import { SUB_TEMPLATE_KEYS, type SubTemplateKey, TesseraError } from '@tessera/core';

/** GCP's limit on `google.subject`; every `sub` Tessera makes stays within it. */
export const MAX_SUBJECT_LENGTH = 127;

/**
 * The version of the `sub` template grammar, carried in every token as `sub_template_version`.
 * Version 1: an ordered list of keys from `SUB_TEMPLATE_KEYS`, each rendered `label:value`, joined by `:`.
 */
export const SUB_TEMPLATE_VERSION = 1;

/**
 * The template used when neither the workspace nor the deployment sets one:
 * `ws:WORKSPACE:deployment:NAME:env:ENV`.
 */
export const DEFAULT_SUB_TEMPLATE: readonly SubTemplateKey[] = Object.freeze(['workspace', 'deployment', 'environment']);

/**
 * The label each key is rendered with in `sub`. Labels are fixed, so a relying party reading a `sub`
 * can tell which template made it (`deployment_id:…` vs `deployment:…`).
 */
export const SUB_TEMPLATE_LABELS: Readonly<Record<SubTemplateKey, string>> = Object.freeze({
  workspace: 'ws',
  project: 'project',
  flow: 'flow',
  deployment: 'deployment',
  deployment_id: 'deployment_id',
  environment: 'env',
  work_pool: 'pool',
});

/** A `sub` template: its grammar version and the keys it renders, in order. */
export interface SubTemplate {
  version: typeof SUB_TEMPLATE_VERSION;
  keys: readonly SubTemplateKey[];
}

/** The values a template can name: everything that describes where a run's token comes from. */
export interface SubjectValues {
  workspace: string;
  project: string;
  flow: string;
  deployment: string;
  /** The deployment's immutable id: never reused, survives renames and redeploys. */
  deployment_id: string;
  environment: string;
  work_pool: string;
}

/** What the default `sub` template is built from. */
export type SubjectParts = Pick<SubjectValues, 'workspace' | 'deployment' | 'environment'>;

/**
 * Escapes a value placed in `sub` so it cannot forge a separator or smuggle invisible characters:
 * `%` and `:` are percent-encoded, and so is every byte outside printable ASCII (space, control
 * characters, non-ASCII as UTF-8). `deployment: "a:env:prod"` can therefore never produce
 * `…:deployment:a:env:prod:…`, and the mapping is reversible (`decodeURIComponent`).
 * @example escapeSubjectValue('a:b%c') // 'a%3Ab%25c'
 */
export function escapeSubjectValue(value: string): string {
  let out = '';
  for (const ch of value) {
    const code = ch.codePointAt(0) as number;
    if (ch === '%' || ch === ':' || code <= 0x20 || code >= 0x7f) {
      for (const byte of Buffer.from(ch, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
    } else {
      out += ch;
    }
  }
  return out;
}

/**
 * Checks a template's keys: at least one, each from `SUB_TEMPLATE_KEYS`, none twice.
 * @param field - how the caller names the setting in errors (`identity.subTemplate`, `subTemplate`).
 * @throws TesseraError `ERR_VALIDATION` naming `field`.
 */
export function parseSubTemplate(keys: unknown, field = 'subTemplate'): SubTemplate {
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new TesseraError('ERR_VALIDATION', `${field}: expected a non-empty list of keys from ${SUB_TEMPLATE_KEYS.join(', ')}`, {
      details: { field },
    });
  }
  const seen = new Set<string>();
  for (const [i, key] of keys.entries()) {
    if (typeof key !== 'string' || !(SUB_TEMPLATE_KEYS as readonly string[]).includes(key)) {
      throw new TesseraError(
        'ERR_VALIDATION',
        `${field}[${i}]: ${JSON.stringify(key)} is not a sub template key; use one of ${SUB_TEMPLATE_KEYS.join(', ')}`,
        { details: { field: `${field}[${i}]` } },
      );
    }
    if (seen.has(key)) {
      throw new TesseraError('ERR_VALIDATION', `${field}[${i}]: "${key}" appears twice; name each key once`, {
        details: { field: `${field}[${i}]` },
      });
    }
    seen.add(key);
  }
  return { version: SUB_TEMPLATE_VERSION, keys: Object.freeze([...keys]) as SubTemplateKey[] };
}

/**
 * Renders `sub` from a template: `label:value` per key, in the template's order, values escaped
 * with {@link escapeSubjectValue}. AWS trust policies can condition only on `sub` and `aud`, so
 * this is what pins a role to a deployment; include `deployment_id` to survive a name being reused.
 * @param field - names the setting responsible, in the error.
 * @throws TesseraError `ERR_VALIDATION` (details `{ field, length, limit }`) when the result would
 *   exceed {@link MAX_SUBJECT_LENGTH}.
 * @example renderSubject(DEFAULT_SUB_TEMPLATE, values) // 'ws:default:deployment:nightly-etl:env:prod'
 */
export function renderSubject(keys: readonly SubTemplateKey[], values: SubjectValues, field = 'subTemplate'): string {
  const sub = formatSubject(keys, values);
  if (sub.length > MAX_SUBJECT_LENGTH) {
    throw new TesseraError(
      'ERR_VALIDATION',
      `${field}: the token subject would be ${sub.length} characters ("${sub.slice(0, 48)}…"); the limit is ${MAX_SUBJECT_LENGTH} (GCP's google.subject). Drop keys from the template (now: ${keys.join(', ')}) or use shorter names.`,
      { details: { field, length: sub.length, limit: MAX_SUBJECT_LENGTH } },
    );
  }
  return sub;
}

/**
 * Renders `sub` like {@link renderSubject} without checking its length: for previews and error
 * messages only, never for a token.
 */
export function formatSubject(keys: readonly SubTemplateKey[], values: SubjectValues): string {
  return keys.map((k) => `${SUB_TEMPLATE_LABELS[k]}:${escapeSubjectValue(values[k])}`).join(':');
}

/**
 * Default `sub` (template version 1): `ws:WORKSPACE:deployment:NAME:env:ENV`.
 * @throws TesseraError `ERR_VALIDATION` when the result would exceed {@link MAX_SUBJECT_LENGTH}.
 */
export function buildDefaultSubject(parts: SubjectParts): string {
  return renderSubject(DEFAULT_SUB_TEMPLATE, { project: '', flow: '', deployment_id: '', work_pool: '', ...parts });
}
