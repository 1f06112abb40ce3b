/** The PostgreSQL wake-up bus: what one replica publishes reaches the others, and not itself. */
import { createTestDatabase, type TestDatabase, testStore } from '@tessera/testing';
import { afterEach, describe, expect, it } from 'vitest';
import type { WakeupBus } from '../services/events.js';
import { createPgWakeupBus } from './pg-bus.js';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function twoBuses(db: TestDatabase): Promise<{ a: WakeupBus; b: WakeupBus; gotA: string[]; gotB: string[] }> {
  const gotA: string[] = [];
  const gotB: string[] = [];
  const a = createPgWakeupBus(db.url);
  const b = createPgWakeupBus(db.url);
  cleanup.push(
    () => a.close(),
    () => b.close(),
  );
  await a.subscribe((k) => gotA.push(k));
  await b.subscribe((k) => gotB.push(k));
  return { a, b, gotA, gotB };
}

describe.skipIf(testStore() !== 'postgres')('PostgreSQL wake-up bus', () => {
  it('delivers a key to the other replicas and never back to the one that published it', async () => {
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const { a, b, gotA, gotB } = await twoBuses(db);
    a.publish('pool:p1');
    b.publish('worker:w1');
    a.publish('slots:p1');
    const deadline = Date.now() + 10_000;
    while ((gotA.length < 1 || gotB.length < 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // An echo of a replica's own key would come through the same channel: give it time to show.
    await new Promise((r) => setTimeout(r, 300));
    expect(gotB.sort()).toEqual(['pool:p1', 'slots:p1']);
    expect(gotA).toEqual(['worker:w1']);
  });
});
