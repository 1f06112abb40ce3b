import { describe, expect, test } from 'vitest';
import { createWorker } from './index.js';

const valid = { apiUrl: 'http://127.0.0.1:4200', pool: 'default' };

describe('worker options', () => {
  test('applies defaults: hostname-pid name and a fresh random id per worker', () => {
    const a = createWorker(valid);
    const b = createWorker(valid);
    expect(a.name).toMatch(new RegExp(`-${process.pid}$`));
    expect(a.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.id).not.toBe(b.id);
    expect(a.running).toEqual([]);
  });

  test.each([
    [{ ...valid, apiUrl: 'localhost:4200' }, 'ERR_CONFIG', /apiUrl: "localhost:4200" is not an http\(s\) URL/],
    [{ ...valid, pool: ' ' }, 'ERR_CONFIG', /pool: a work pool name is required/],
    [{ ...valid, concurrency: 0 }, 'ERR_CONFIG', /concurrency: 0 is not allowed/],
    [{ ...valid, pollWaitMs: 'soon' }, 'ERR_INVALID_DURATION', /pollWaitMs: "soon" is not a valid duration/],
  ])('rejects invalid options naming the option (%#)', (options, code, message) => {
    expect(() => createWorker(options)).toThrow(message);
    try {
      createWorker(options);
    } catch (e) {
      expect(e).toMatchObject({ code });
    }
  });

  test('accepts duration strings', () => {
    expect(() => createWorker({ ...valid, pollWaitMs: '5s', cancelGraceMs: '1m', serverRetryForMs: '10m' })).not.toThrow();
  });

  test('start() fails with ERR_CONFIG when the runner module does not exist', () => {
    const worker = createWorker({ ...valid, runnerModule: '/nonexistent/run-flow.js' });
    expect(() => worker.start()).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG', message: expect.stringContaining('/nonexistent/run-flow.js') }),
    );
  });
});
