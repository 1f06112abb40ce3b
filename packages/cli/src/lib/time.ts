import { formatDuration } from '@tessera/core';

/** The user's time zone (from `TZ` or the system). */
export function localTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

const partsCache = new Map<string, Intl.DateTimeFormat>();
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = partsCache.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-CA', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      fractionalSecondDigits: 3,
      hourCycle: 'h23',
    });
    partsCache.set(timeZone, f);
  }
  return f;
}

/** Date and time parts of an instant in a zone. */
function parts(iso: string | Date, timeZone: string): Record<string, string> {
  const d = typeof iso === 'string' ? new Date(iso) : iso;
  const out: Record<string, string> = {};
  for (const p of formatter(timeZone).formatToParts(d)) out[p.type] = p.value;
  return out;
}

/** `2026-11-28` in the zone. */
export function formatDate(iso: string | Date, timeZone: string): string {
  const p = parts(iso, timeZone);
  return `${p.year}-${p.month}-${p.day}`;
}

/**
 * `02:00:00` (or `02:00:00.004` with `ms`), prefixed with the date (`2026-11-28 02:00:00`) with
 * `date`. No zone: callers show the zone once, with {@link zoneName}.
 */
export function formatTime(iso: string | Date, timeZone: string, options: { date?: boolean; ms?: boolean } = {}): string {
  const p = parts(iso, timeZone);
  const time = `${p.hour}:${p.minute}:${p.second}${options.ms ? `.${p.fractionalSecond}` : ''}`;
  return options.date ? `${p.year}-${p.month}-${p.day} ${time}` : time;
}

/** A short, recognisable name of the zone at an instant: `UTC`, `EST`, `CET`, else `GMT+5:30`. */
export function zoneName(timeZone: string, at: string | Date = new Date()): string {
  const d = typeof at === 'string' ? new Date(at) : at;
  const name = (locale: string) =>
    new Intl.DateTimeFormat(locale, { timeZone, timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName')?.value ??
    timeZone;
  const us = name('en-US');
  if (!us.startsWith('GMT')) return us;
  const gb = name('en-GB');
  return gb.startsWith('GMT') ? us : gb;
}

/** `2026-11-28 02:00:00 CET`: a full timestamp with its zone. */
export function formatTimestamp(iso: string | Date, timeZone: string): string {
  return `${formatTime(iso, timeZone, { date: true })} ${zoneName(timeZone, iso)}`;
}

/** How long ago, for listings: `12 s ago`, `5 m ago`, `3 h ago`, `2 d ago`; future times as `in 5 m`. */
export function formatAgo(iso: string, now: Date): string {
  const delta = now.getTime() - new Date(iso).getTime();
  const abs = Math.abs(delta);
  let text: string;
  if (abs < 60_000) text = `${Math.round(abs / 1000)} s`;
  else if (abs < 3_600_000) text = `${Math.floor(abs / 60_000)} m`;
  else if (abs < 86_400_000) text = `${Math.floor(abs / 3_600_000)} h`;
  else text = `${Math.floor(abs / 86_400_000)} d`;
  return delta >= 0 ? `${text} ago` : `in ${text}`;
}

/** Duration between two ISO times, or `undefined` when either is missing. */
export function elapsed(start: string | null | undefined, end: string | null | undefined): number | undefined {
  if (!start || !end) return undefined;
  return Math.max(0, new Date(end).getTime() - new Date(start).getTime());
}

export { formatDuration };
