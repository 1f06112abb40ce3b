/**
 * Terminal styling. Colour is only an aid: every symbol has a plain-text meaning, and colour is
 * off when `NO_COLOR` is set, when `--no-color` is passed, or when the stream is not a terminal.
 * @see https://no-color.org
 */
export interface Style {
  readonly color: boolean;
  /** Whether the output stream is an interactive terminal (enables in-place updates). */
  readonly tty: boolean;
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  blue(s: string): string;
  cyan(s: string): string;
  magenta(s: string): string;
}

const wrap = (open: number, close: number) => (s: string) => `\x1b[${open}m${s}\x1b[${close}m`;
const id = (s: string) => s;

/** Creates a {@link Style}; `color: false` gives plain text, as used by tests. */
export function createStyle(options: { color: boolean; tty?: boolean }): Style {
  const c = options.color;
  return Object.freeze({
    color: c,
    tty: options.tty ?? false,
    bold: c ? wrap(1, 22) : id,
    dim: c ? wrap(2, 22) : id,
    red: c ? wrap(31, 39) : id,
    green: c ? wrap(32, 39) : id,
    yellow: c ? wrap(33, 39) : id,
    blue: c ? wrap(34, 39) : id,
    cyan: c ? wrap(36, 39) : id,
    magenta: c ? wrap(35, 39) : id,
  });
}

/** A style with no colour, for tests and `--json`. */
export const PLAIN: Style = createStyle({ color: false });

/** Decides whether to colour a stream, following the NO_COLOR / FORCE_COLOR conventions. */
export function shouldColor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv, flag: boolean | undefined): boolean {
  if (flag === false) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0') return true;
  if (env.TERM === 'dumb') return false;
  return stream.isTTY === true;
}

/** Removes ANSI escapes, to measure what a person sees. */
export function stripAnsi(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escapes is the point
  return s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}

/** Visible width of a string (ANSI escapes excluded). */
export function visibleWidth(s: string): number {
  return [...stripAnsi(s)].length;
}

/** Pads to a visible width, ignoring ANSI escapes. */
export function padEnd(s: string, width: number): string {
  const w = visibleWidth(s);
  return w >= width ? s : s + ' '.repeat(width - w);
}
