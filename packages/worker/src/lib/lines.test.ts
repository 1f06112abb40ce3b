import { describe, expect, test } from 'vitest';
import { LineSplitter, LineTail } from './lines.js';

describe('LineSplitter', () => {
  test('joins lines split across chunks, strips \\r\\n, and flushes the unterminated rest on end()', () => {
    const lines: string[] = [];
    const splitter = new LineSplitter((l) => lines.push(l));
    splitter.push('hel');
    splitter.push('lo\r\nwor');
    splitter.push('ld\n\nlast');
    expect(lines).toEqual(['hello', 'world', '']);
    splitter.end();
    expect(lines).toEqual(['hello', 'world', '', 'last']);
  });

  test('cuts a line longer than 64 KiB into pieces instead of buffering without limit', () => {
    const lines: string[] = [];
    const splitter = new LineSplitter((l) => lines.push(l));
    splitter.push('x'.repeat(70 * 1024));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toHaveLength(64 * 1024);
  });
});

test('never cuts a token in two when it cuts a long line: each piece can be masked whole', async () => {
  const { redactSecrets } = await import('@tessera/core');
  const jwt = `eyJhbGciOiJSUzI1NiJ9.${'eyJzdWIiOiJ4In0'.repeat(40)}.${'s'.repeat(342)}`;
  const lines: string[] = [];
  const splitter = new LineSplitter((l) => lines.push(redactSecrets(l)));
  // The token straddles the 64 KiB mark, with more text after it on the same line.
  splitter.push(`${'log '.repeat((64 * 1024 - 300) / 4)}${jwt} and more text`);
  splitter.push('\n');
  expect(lines.length).toBeGreaterThan(1);
  expect(lines.join('')).not.toContain(jwt.slice(40, 80));
  expect(lines.join('')).not.toContain('s'.repeat(100));
});

describe('LineTail', () => {
  test('keeps only the last N lines, each cut to its maximum length', () => {
    const tail = new LineTail(3, 5);
    for (const l of ['a', 'b', 'c', 'd', 'abcdefgh']) tail.push(l);
    expect(tail.toArray()).toEqual(['c', 'd', 'abcde…']);
  });
});
