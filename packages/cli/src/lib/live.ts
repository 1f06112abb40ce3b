import type { OutputStream } from './io.js';

/**
 * A few lines at the bottom of a terminal that are redrawn in place (a progress view), with
 * ordinary lines (logs) printed above them. Only for TTYs; pipes get plain lines instead.
 */
export class LiveRegion {
  private lines = 0;
  private readonly out: OutputStream;

  constructor(out: OutputStream) {
    this.out = out;
  }

  /** Replaces the region with `lines`. */
  render(lines: readonly string[]): void {
    this.out.write(`${this.clearSequence()}${lines.map((l) => `${l}\x1b[K`).join('\n')}${lines.length ? '\n' : ''}`);
    this.lines = lines.length;
  }

  /** Prints a line above the region, then redraws the region with `lines`. */
  print(text: string, lines: readonly string[]): void {
    this.out.write(`${this.clearSequence()}${text}\n`);
    this.lines = 0;
    this.render(lines);
  }

  /** Removes the region (before a final summary). */
  clear(): void {
    this.out.write(this.clearSequence());
    this.lines = 0;
  }

  private clearSequence(): string {
    // Cursor to the start of the first region line, then erase to the end of the screen.
    return this.lines > 0 ? `\x1b[${this.lines}F\x1b[J` : '';
  }
}
