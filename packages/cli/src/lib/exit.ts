import { type ErrorCode, isTesseraError, TesseraError, ValidationError } from '@tessera/core';
import type { Style } from './style.js';

/** What the `tessera` command's exit status means. */
export const EXIT = {
  ok: 0,
  /** A command failed, or the run it followed did not complete. */
  failure: 1,
  /** Bad usage or configuration: fix the command line or the file. */
  usage: 2,
  /** The server could not be reached. */
  unreachable: 3,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

const USAGE_CODES: ReadonlySet<ErrorCode | string> = new Set<ErrorCode>([
  'ERR_CONFIG',
  'ERR_VALIDATION',
  'ERR_INVALID_DURATION',
  'ERR_INVALID_SCHEDULE',
  'ERR_ENTRYPOINT',
  'ERR_INVALID_PARAMETERS',
  'ERR_UNKNOWN_POOL',
  'ERR_KEY_FILE_INSECURE',
  'ERR_KEY_FILE_INVALID',
]);

/** The exit status for an error: 3 server unreachable, 2 usage or configuration, 1 anything else. */
export function exitCodeFor(error: unknown): ExitCode {
  if (isTesseraError(error)) {
    if (error.code === 'ERR_SERVER_UNREACHABLE') return EXIT.unreachable;
    if (USAGE_CODES.has(error.code)) return EXIT.usage;
  }
  if (error instanceof UsageError) return EXIT.usage;
  return EXIT.failure;
}

/** A mistake on the command line (bad flag value, missing argument). Exit status 2. */
export class UsageError extends TesseraError {
  constructor(message: string) {
    super('ERR_VALIDATION', message);
  }
}

/**
 * Formats an error for people: `error ERR_CODE: message`, continuation lines indented, the
 * server's field issues listed. With `debug`, the stack and the chain of causes follow.
 */
export function formatError(error: unknown, style: Style, debug = false): string {
  const lines: string[] = [];
  if (isTesseraError(error)) {
    const [first = '', ...rest] = error.message.split('\n');
    lines.push(`${style.red(style.bold('error'))} ${style.bold(error.code)}: ${first}`);
    for (const l of rest) lines.push(`  ${l}`);
    // Issues from the server (a ValidationError over HTTP) are not in the message; list them.
    const issues = !(error instanceof ValidationError) ? error.details?.issues : undefined;
    if (Array.isArray(issues)) {
      for (const i of issues as { path?: string; message?: string }[]) lines.push(`  ${i.path ? `${i.path}: ` : ''}${i.message ?? ''}`);
    }
  } else if (error instanceof Error) {
    lines.push(`${style.red(style.bold('error'))} ${style.bold('ERR_INTERNAL')}: ${error.message}`);
    if (!debug) lines.push(style.dim('  (this is a bug in tessera; run again with --debug for the stack trace)'));
  } else {
    lines.push(`${style.red(style.bold('error'))}: ${String(error)}`);
  }
  if (debug && error instanceof Error) {
    let e: unknown = error;
    let depth = 0;
    while (e instanceof Error && depth < 5) {
      lines.push(style.dim((depth === 0 ? e.stack : `caused by: ${e.stack}`) ?? String(e)));
      e = (e as Error & { cause?: unknown }).cause;
      depth++;
    }
    if (e !== undefined && !(e instanceof Error)) lines.push(style.dim(`caused by: ${String(e)}`));
  }
  return lines.join('\n');
}
