import { TesseraError } from '@tessera/core';

/** GCP's limit on `google.subject`; every `sub` Tessera makes stays within it. */
export const MAX_SUBJECT_LENGTH = 127;

/** What the default `sub` template is built from. */
export interface SubjectParts {
  workspace: string;
  deployment: string;
  environment: string;
}

/**
 * Escapes a value placed in `sub` so it cannot forge a separator: `:` and `%` are percent-encoded,
 * so `deployment: "a:env:prod"` can never produce `…:deployment:a:env:prod:…`.
 */
export function escapeSubjectValue(value: string): string {
  return value.replace(/[%:]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/**
 * Default `sub` (template version 1): `ws:WORKSPACE:deployment:NAME:env:ENV`.
 * AWS trust policies can condition only on `sub` and `aud`, so this is what pins a role to one
 * deployment in one environment.
 * @throws TesseraError `ERR_VALIDATION` when the result would exceed {@link MAX_SUBJECT_LENGTH}.
 */
export function buildDefaultSubject(parts: SubjectParts): string {
  const sub = `ws:${escapeSubjectValue(parts.workspace)}:deployment:${escapeSubjectValue(parts.deployment)}:env:${escapeSubjectValue(parts.environment)}`;
  if (sub.length > MAX_SUBJECT_LENGTH) {
    throw new TesseraError(
      'ERR_VALIDATION',
      `the token subject would be ${sub.length} characters ("${sub.slice(0, 40)}…"); the limit is ${MAX_SUBJECT_LENGTH} (GCP's google.subject). Use a shorter deployment or environment name.`,
      { details: { field: 'sub', length: sub.length } },
    );
  }
  return sub;
}
