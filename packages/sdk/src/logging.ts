import { format, inspect } from 'node:util';
import { type LogEntry, redactAndCut } from '@tessera/core';
import { type Frame, LOG_LEVELS, type LogLevelName, logThresholdFromEnv, storage } from './lib/scope.js';

/** A log level. Lines below `TESSERA_LOG_LEVEL` (default `info`) are dropped. */
export type LogLevel = LogLevelName;

/**
 * Writes log lines: to the terminal (stdout, or stderr for `warn` and `error`) and, inside a run
 * started by Tessera, to the run's log on the server. Arguments are formatted like `console.log`.
 * Every line passes through `redactSecrets`, so a token logged by mistake appears masked.
 */
export interface Logger {
  debug(message: unknown, ...args: unknown[]): void;
  info(message: unknown, ...args: unknown[]): void;
  warn(message: unknown, ...args: unknown[]): void;
  error(message: unknown, ...args: unknown[]): void;
}

/** Longest message kept; the rest is cut so one line cannot blow the server's body limit. */
const MAX_MESSAGE_CHARS = 32_000;

/**
 * Returns the logger of the current flow or task run; outside a run, a logger that only prints.
 * @example getLogger().info('fetched %d rows', rows.length)
 */
export function getLogger(): Logger {
  const frame = storage.getStore();
  return frame ? loggerFor(frame) : detachedLogger;
}

/**
 * A logger that always writes to the run the caller is in (resolved at each call), so it can be
 * imported once at module level.
 * @example log.warn('retrying upstream call')
 */
export const log: Logger = Object.freeze({
  debug: (message: unknown, ...args: unknown[]) => writeLog(storage.getStore() ?? null, 'debug', message, args),
  info: (message: unknown, ...args: unknown[]) => writeLog(storage.getStore() ?? null, 'info', message, args),
  warn: (message: unknown, ...args: unknown[]) => writeLog(storage.getStore() ?? null, 'warn', message, args),
  error: (message: unknown, ...args: unknown[]) => writeLog(storage.getStore() ?? null, 'error', message, args),
});

const detachedLogger = bindLogger(null);

/** The (cached) logger bound to a frame. */
export function loggerFor(frame: Frame): Logger {
  frame.logger ??= bindLogger(frame);
  return frame.logger;
}

function bindLogger(frame: Frame | null): Logger {
  return Object.freeze({
    debug: (message: unknown, ...args: unknown[]) => writeLog(frame, 'debug', message, args),
    info: (message: unknown, ...args: unknown[]) => writeLog(frame, 'info', message, args),
    warn: (message: unknown, ...args: unknown[]) => writeLog(frame, 'warn', message, args),
    error: (message: unknown, ...args: unknown[]) => writeLog(frame, 'error', message, args),
  });
}

let detachedThreshold: number | undefined;

/** Formats, redacts, prints and (inside a tracked run) queues one log line. */
export function writeLog(frame: Frame | null, level: LogLevel, message: unknown, args: readonly unknown[]): void {
  detachedThreshold ??= logThresholdFromEnv();
  const threshold = frame ? frame.scope.logThreshold : detachedThreshold;
  if (LOG_LEVELS[level] < threshold) return;
  let text = args.length > 0 ? format(message, ...args) : typeof message === 'string' ? message : inspect(message);
  const length = text.length;
  text = redactAndCut(text, MAX_MESSAGE_CHARS);
  if (length > MAX_MESSAGE_CHARS) text = `${text}… (${length - MAX_MESSAGE_CHARS} more characters cut)`;
  const timestamp = new Date().toISOString();
  if (!frame || frame.scope.printLogs) {
    const who = frame ? ` [${frame.task ? frame.task.name : frame.scope.flowName}]` : '';
    const line = `${timestamp.slice(11, 23)} ${level.toUpperCase().padEnd(5)}${who} ${text}\n`;
    (level === 'warn' || level === 'error' ? process.stderr : process.stdout).write(line);
  }
  if (!frame) return;
  const { scope } = frame;
  if (!scope.reporter && !scope.onEvent) return;
  const entry: LogEntry = { flowRunId: scope.runId, taskRunId: frame.task?.id ?? null, level, message: text, timestamp };
  scope.reporter?.logs.push(entry);
  scope.onEvent?.({ type: 'log', entry });
}
