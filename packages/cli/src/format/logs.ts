import type { LogEntry } from '@tessera/core';
import { redactSecrets } from '@tessera/core';
import { type Style, visibleWidth } from '../lib/style.js';
import { formatTime, zoneName } from '../lib/time.js';

const LEVEL_WIDTH = 5;

/**
 * One log line: `02:00:01.120 CET  INFO   [extract] message`. Multi-line messages keep their
 * indentation under the message. Redacted again on display, in case a line predates redaction.
 */
export function formatLogLine(entry: LogEntry, options: { style: Style; timeZone: string; taskName?: string | undefined }): string {
  const { style, timeZone } = options;
  const when = style.dim(`${formatTime(entry.timestamp, timeZone, { ms: true })} ${zoneName(timeZone, entry.timestamp)}`);
  const levelText = entry.level.toUpperCase().padEnd(LEVEL_WIDTH);
  const level =
    entry.level === 'error'
      ? style.red(levelText)
      : entry.level === 'warn'
        ? style.yellow(levelText)
        : entry.level === 'debug'
          ? style.dim(levelText)
          : levelText;
  const where = options.taskName ? `${style.cyan(`[${options.taskName}]`)} ` : '';
  const [first = '', ...rest] = redactSecrets(entry.message).split('\n');
  const prefix = `${when}  ${level}  `;
  const pad = ' '.repeat(visibleWidth(prefix));
  return [`${prefix}${where}${first}`, ...rest.map((l) => `${pad}${l}`)].join('\n');
}
