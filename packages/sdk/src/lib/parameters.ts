import { ValidationError, type ValidationIssue } from '@tessera/core';
import type { z } from 'zod';

/** `['items', 0, 'name']` → `items[0].name`. */
export function formatIssuePath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? '(root)' : out;
}

/**
 * Validates a flow's parameters against its schema and returns the parsed value (defaults applied).
 * Without a schema, parameters pass through as given.
 *
 * @throws ValidationError `ERR_INVALID_PARAMETERS`; the message names each field and its problem,
 * `details.issues` lists them as `{ path, message }`.
 */
export function validateParameters(flowName: string, schema: z.ZodObject | null, input: unknown): Record<string, unknown> {
  const value = input ?? {};
  if (!schema) {
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new ValidationError(
        `invalid parameters for flow "${flowName}": expected an object of named parameters, got ${Array.isArray(value) ? 'an array' : typeof value}`,
        [{ path: '(root)', message: 'expected an object' }],
        'ERR_INVALID_PARAMETERS',
      );
    }
    return value as Record<string, unknown>;
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data as Record<string, unknown>;
  const issues: ValidationIssue[] = parsed.error.issues.map((issue) => ({ path: formatIssuePath(issue.path), message: issue.message }));
  const list = issues.map((i) => `${i.path}: ${i.message}`).join('; ');
  return throwInvalid(flowName, list, issues);
}

function throwInvalid(flowName: string, list: string, issues: ValidationIssue[]): never {
  throw new ValidationError(`invalid parameters for flow "${flowName}": ${list}`, issues, 'ERR_INVALID_PARAMETERS');
}
