/** Longest line kept whole; a longer run of bytes without a newline is emitted in pieces. */
const MAX_LINE = 64 * 1024;

/** Characters of a token (JWT, base64url, `tsr_…`): a piece is never cut between two of them if it can be helped. */
const TOKEN_CHAR = /[A-Za-z0-9._~+/=-]/;

/**
 * Where to cut an over-long line: after the last character that cannot be part of a token in the
 * second half of the window, so each piece is masked with every token in it whole (a token cut in two
 * would match no secret pattern and go out in clear). A window with no such character is cut at its end.
 */
function cutPoint(buffer: string): number {
  for (let i = MAX_LINE - 1; i >= MAX_LINE / 2; i--) if (!TOKEN_CHAR.test(buffer[i] as string)) return i + 1;
  return MAX_LINE;
}

/** Splits a stream of text chunks into lines (without their `\n` or `\r\n`). */
export class LineSplitter {
  private buffer = '';
  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    this.buffer += chunk;
    let nl = this.buffer.indexOf('\n');
    while (nl !== -1) {
      this.emit(this.buffer.slice(0, nl));
      this.buffer = this.buffer.slice(nl + 1);
      nl = this.buffer.indexOf('\n');
    }
    while (this.buffer.length > MAX_LINE) {
      const cut = cutPoint(this.buffer);
      this.emit(this.buffer.slice(0, cut));
      this.buffer = this.buffer.slice(cut);
    }
  }

  /** Emits what is left after the last newline. */
  end(): void {
    if (this.buffer.length > 0) this.emit(this.buffer);
    this.buffer = '';
  }

  private emit(line: string): void {
    this.onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
  }
}

/** Keeps the last `size` lines, each cut to `maxLineLength` characters. */
export class LineTail {
  private readonly lines: string[] = [];
  constructor(
    private readonly size: number,
    private readonly maxLineLength = 500,
  ) {}

  push(line: string): void {
    this.lines.push(line.length > this.maxLineLength ? `${line.slice(0, this.maxLineLength)}…` : line);
    if (this.lines.length > this.size) this.lines.shift();
  }

  toArray(): string[] {
    return [...this.lines];
  }
}
