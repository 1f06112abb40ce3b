import { TesseraError, ValidationError } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeFor, formatError } from './exit.js';
import { PLAIN } from './style.js';
import { didYouMean } from './suggest.js';

describe('exit codes', () => {
  it('maps errors to 3 unreachable, 2 usage or config, 1 anything else', () => {
    expect(exitCodeFor(new TesseraError('ERR_SERVER_UNREACHABLE', 'x'))).toBe(EXIT.unreachable);
    for (const code of ['ERR_CONFIG', 'ERR_ENTRYPOINT', 'ERR_INVALID_PARAMETERS', 'ERR_UNKNOWN_POOL', 'ERR_VALIDATION'] as const) {
      expect(exitCodeFor(new TesseraError(code, 'x'))).toBe(EXIT.usage);
    }
    expect(exitCodeFor(new TesseraError('ERR_NOT_FOUND', 'x'))).toBe(EXIT.failure);
    expect(exitCodeFor(new Error('bug'))).toBe(EXIT.failure);
  });
});

describe('formatError', () => {
  it('prints the code and message, continuation lines indented, no stack', () => {
    const e = new ValidationError('tessera.yaml: 1 problem\ntessera.yaml:3:5  deployments[0].x: bad', [], 'ERR_CONFIG');
    expect(formatError(e, PLAIN)).toBe('error ERR_CONFIG: tessera.yaml: 1 problem\n  tessera.yaml:3:5  deployments[0].x: bad');
  });

  it("lists the server's field issues", () => {
    const e = new TesseraError('ERR_VALIDATION', 'invalid request body', {
      details: { issues: [{ path: 'schedules[0].cron', message: 'bad cron' }] },
    });
    expect(formatError(e, PLAIN)).toBe('error ERR_VALIDATION: invalid request body\n  schedules[0].cron: bad cron');
  });

  it('shows the stack and causes only with --debug', () => {
    const e = new TesseraError('ERR_HTTP', 'server answered HTTP 500', { cause: new Error('socket hang up') });
    expect(formatError(e, PLAIN)).not.toMatch(/\n\s+at /);
    const debug = formatError(e, PLAIN, true);
    expect(debug).toMatch(/\n\s+at /);
    expect(debug).toMatch(/caused by: Error: socket hang up/);
  });

  it('calls an unexpected error a bug and points at --debug', () => {
    expect(formatError(new TypeError('x is undefined'), PLAIN)).toBe(
      'error ERR_INTERNAL: x is undefined\n  (this is a bug in tessera; run again with --debug for the stack trace)',
    );
  });
});

describe('didYouMean', () => {
  it.each([
    ['shedule', 'schedule'],
    ['tgas', 'tags'],
    ['workPool', 'work_pool'],
    ['queue', 'work_queue'],
    ['entrypiont', 'entrypoint'],
    ['colour', undefined],
    ['x', undefined],
  ])('%s → %s', (input, expected) => {
    expect(didYouMean(input, ['schedule', 'tags', 'work_pool', 'work_queue', 'entrypoint', 'name'])).toBe(expected);
  });
});
