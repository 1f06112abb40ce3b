import { describe, expect, test } from 'vitest';
import { decideFinalState } from './final-state.js';

const base = { current: 'RUNNING' as const, cancelRequested: false, shutdown: false, stderrTail: [] };

describe('decideFinalState', () => {
  test('a process that exited on its own is CRASHED, with code, signal and the stderr tail', () => {
    const body = decideFinalState({ ...base, exit: { code: 1, signal: null }, stderrTail: ['Error: boom', '    at main'] });
    expect(body.state).toEqual({
      type: 'CRASHED',
      message: 'flow process exited with code 1 (signal none) before reporting a final state; last stderr:\nError: boom\n    at main',
    });
    expect(body.error?.message).toBe(body.state.message);
  });

  test('says so when the process wrote nothing to stderr', () => {
    const body = decideFinalState({ ...base, exit: { code: null, signal: 'SIGKILL' } });
    expect(body.state.message).toBe(
      'flow process exited with code none (signal SIGKILL) before reporting a final state; it wrote nothing to stderr',
    );
  });

  test('is CANCELLED when a cancel was requested or the run is Cancelling, even during shutdown', () => {
    expect(decideFinalState({ ...base, exit: { code: null, signal: 'SIGTERM' }, cancelRequested: true }).state.type).toBe('CANCELLED');
    expect(decideFinalState({ ...base, exit: { code: 0, signal: null }, current: 'CANCELLING', shutdown: true }).state.type).toBe(
      'CANCELLED',
    );
  });

  test('is CRASHED "worker shut down" when the worker stopped the process', () => {
    const body = decideFinalState({ ...base, exit: { code: null, signal: 'SIGTERM' }, shutdown: true });
    expect(body.state.type).toBe('CRASHED');
    expect(body.state.message).toBe('worker shut down; flow process exited with code none (signal SIGTERM)');
  });

  test('keeps the message under 4000 characters by dropping the oldest stderr lines', () => {
    const tail = Array.from({ length: 30 }, (_, i) => `${i}`.padEnd(400, '.'));
    const message = decideFinalState({ ...base, exit: { code: 1, signal: null }, stderrTail: tail }).state.message ?? '';
    expect(message.length).toBeLessThanOrEqual(4000);
    expect(message).toContain('last stderr:\n…\n');
    expect(message.endsWith(tail[29] as string)).toBe(true);
  });
});
