import { UsageError } from './exit.js';

/**
 * Parses one `--param key=value`. The value is taken as JSON when it parses (`n=3`, `ok=true`,
 * `tags=["a","b"]`), else as a string (`name=world`). Quote a JSON-looking string as JSON: `id='"007"'`.
 * @throws UsageError when there is no `=` or no key.
 */
export function parseParamAssignment(text: string): [key: string, value: unknown] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`--param ${JSON.stringify(text)} is not key=value; e.g. --param name=world --param retries=3`);
  const key = text.slice(0, eq).trim();
  if (!key) throw new UsageError(`--param ${JSON.stringify(text)} has no key; e.g. --param name=world`);
  const raw = text.slice(eq + 1);
  return [key, parseParamValue(raw)];
}

/** A parameter value: JSON when it parses, else the string itself. */
export function parseParamValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/**
 * Builds run parameters from `--params-json` (an object) and repeated `--param k=v` (which win).
 * @throws UsageError on a malformed value.
 */
export function buildParameters(options: {
  param?: readonly string[] | undefined;
  paramsJson?: string | undefined;
}): Record<string, unknown> {
  let base: Record<string, unknown> = {};
  if (options.paramsJson !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(options.paramsJson);
    } catch (e) {
      throw new UsageError(`--params-json is not valid JSON (${(e as Error).message}); e.g. --params-json '{"name":"world"}'`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new UsageError(
        `--params-json must be a JSON object such as '{"name":"world"}', found ${Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed)}`,
      );
    }
    base = { ...(parsed as Record<string, unknown>) };
  }
  for (const p of options.param ?? []) {
    const [k, v] = parseParamAssignment(p);
    base[k] = v;
  }
  return base;
}

/** Commander collector for repeatable options. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
