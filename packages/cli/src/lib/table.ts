import { padEnd, type Style, visibleWidth } from './style.js';

/**
 * Renders rows as aligned columns with a dim header. The last column is not padded, so long
 * values (descriptions, errors) do not push trailing spaces.
 */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[], style: Style): string {
  const widths = headers.map((h, i) => Math.max(visibleWidth(h), ...rows.map((r) => visibleWidth(r[i] ?? ''))));
  const line = (cells: readonly string[], fmt: (s: string) => string = (s) => s) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? fmt(c) : fmt(padEnd(c, widths[i] ?? 0))))
      .join('  ')
      .trimEnd();
  return [line(headers, style.dim), ...rows.map((r) => line(r))].join('\n');
}
