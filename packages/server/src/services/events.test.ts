/** Wake-ups for long polls: what a poll decides to wait for after reading the database is not lost. */
import { describe, expect, it } from 'vitest';
import { WAKE_ALL, Wakeups } from './events.js';

describe('Wakeups.record', () => {
  it('keeps the keys that fired before the wait began, and only while recording', () => {
    const w = new Wakeups();
    const seen = w.record(['pool:p', 'slots:p']);
    w.slotFreed('p');
    w.workerChanged('other');
    expect([...seen.fired]).toEqual(['slots:p']);
    seen.stop();
    w.poolChanged('p');
    expect([...seen.fired]).toEqual(['slots:p']);
  });

  it('notes a bus interruption (anything may have changed)', async () => {
    const w = new Wakeups();
    let deliver: (key: string) => void = () => {};
    await w.attach({
      publish: () => {},
      subscribe: async (d) => {
        deliver = d;
      },
      close: async () => {},
    });
    const seen = w.record(['pool:p']);
    deliver(WAKE_ALL);
    expect(seen.fired.has(WAKE_ALL)).toBe(true);
    seen.stop();
  });

  it('a wait resolves with the key that fires, and a slot wake-up reaches only who waits for it', async () => {
    const w = new Wakeups();
    const blocked = w.wait(['pool:p', 'slots:p'], 5_000);
    const idle = w.wait(['pool:p'], 50);
    w.slotFreed('p');
    expect(await blocked).toBe('slots:p');
    expect(await idle).toBeNull();
  });
});
