import { TesseraError } from './errors.js';

/** A duration as users write it: milliseconds, or a string such as `'250ms'`, `'10s'`, `'5m'`, `'1h'`, `'1d'`. */
export type Duration = number | string;

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Parses a {@link Duration} into milliseconds. Numbers are taken as milliseconds. Compound strings
 * such as `'1h30m'` are accepted.
 *
 * @throws TesseraError `ERR_INVALID_DURATION` naming the input and the accepted forms.
 * @example parseDuration('10s') // 10000
 */
export function parseDuration(value: Duration, what = 'duration'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) {
      throw new TesseraError(
        'ERR_INVALID_DURATION',
        `${what}: ${value} is not a valid duration; use a non-negative number of milliseconds or a string like "10s"`,
      );
    }
    return value;
  }
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * (UNITS[m[2] as string] as number);
    matched += m[0].length;
  }
  if (matched === 0 || matched !== text.length) {
    throw new TesseraError(
      'ERR_INVALID_DURATION',
      `${what}: "${value}" is not a valid duration; use e.g. "500ms", "10s", "5m", "1h" or "1h30m"`,
    );
  }
  return total;
}

/** Formats milliseconds for people: `850 ms`, `1.4 s`, `2 m 5 s`, `3 h 2 m`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} m ${Math.round((ms % 60_000) / 1000)} s`;
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} m`;
}
