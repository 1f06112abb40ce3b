import { Writable } from 'node:stream';
import type { OutputStream } from './io.js';
import type { Style } from './style.js';
import { formatTime, zoneName } from './time.js';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** Formats one pino JSON line for people; other text passes through unchanged. */
export function formatPinoLine(line: string, options: { style: Style; timeZone: string; source?: string }): string {
  let rec: { level?: number; time?: number; msg?: string; err?: { message?: string; stack?: string }; [k: string]: unknown };
  try {
    rec = JSON.parse(line);
  } catch {
    return line;
  }
  if (typeof rec !== 'object' || rec === null || typeof rec.level !== 'number') return line;
  const { style, timeZone } = options;
  const at = new Date(typeof rec.time === 'number' ? rec.time : Date.now());
  const levelName = (LEVELS[rec.level] ?? String(rec.level)).padEnd(5);
  const level =
    rec.level >= 50 ? style.red(levelName) : rec.level >= 40 ? style.yellow(levelName) : rec.level <= 20 ? style.dim(levelName) : levelName;
  const source = options.source ? `${style.dim(options.source)}  ` : '';
  const err = rec.err?.message ? `: ${rec.err.message}` : '';
  return `${style.dim(`${formatTime(at, timeZone)} ${zoneName(timeZone, at)}`)}  ${level}  ${source}${rec.msg ?? ''}${err}`;
}

/** A writable stream that turns pino's JSON lines into readable lines on `out`. */
export function createPrettyLogStream(out: OutputStream, options: { style: Style; timeZone: string; source?: string }): Writable {
  let buffer = '';
  return new Writable({
    write(chunk: Buffer | string, _enc, done) {
      buffer += chunk.toString();
      let nl = buffer.indexOf('\n');
      while (nl >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim()) out.write(`${formatPinoLine(line, options)}\n`);
        nl = buffer.indexOf('\n');
      }
      done();
    },
  });
}
