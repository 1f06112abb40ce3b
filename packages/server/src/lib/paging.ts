/**
 * How many rows a list answers: `requested` (an integer, at least 1) up to `max`, else `fallback`. A
 * negative, zero or fractional `limit` never lifts the cap (SQLite reads `LIMIT -1` as no limit).
 */
export function pageSize(requested: number | undefined, fallback: number, max: number): number {
  return Math.min(Math.max(1, Math.trunc(requested ?? fallback)), max);
}
