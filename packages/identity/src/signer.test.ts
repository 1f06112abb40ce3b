import type { Worker } from 'node:worker_threads';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { generateSigningKey, type SigningKey } from './keys.js';
import { signCompactJwt } from './mint.js';
import { createThreadSigner, type JwsSigner, poolSigner } from './signer.js';

const signers: JwsSigner[] = [];
afterEach(async () => {
  for (const s of signers.splice(0)) await s.close();
});

async function verifies(token: string, key: SigningKey): Promise<boolean> {
  try {
    await jwtVerify(token, createLocalJWKSet({ keys: [key.publicJwk] }), { algorithms: [key.alg] });
    return true;
  } catch {
    return false;
  }
}

describe('the thread signer', () => {
  it('signs many concurrent RS256 and ES256 tokens, in batches, each verifying with its own key', async () => {
    const started: Worker[] = [];
    const signer = createThreadSigner({ threads: 2, maxBatch: 8, inlineEs256Max: 0, onThreadStart: (w) => started.push(w) });
    signers.push(signer);
    const rs = await generateSigningKey('RS256');
    const es = await generateSigningKey('ES256');
    const tokens = await Promise.all(
      Array.from({ length: 100 }, (_, i) => {
        const key = i % 3 === 0 ? rs : es;
        return signCompactJwt(key, { n: i }, signer).then((token) => ({ token, key, n: i }));
      }),
    );
    for (const { token, key } of tokens) expect(await verifies(token, key)).toBe(true);
    // Signatures are bound to their own payloads (no mix-up across a batch).
    const [a, b] = tokens as [(typeof tokens)[number], (typeof tokens)[number]];
    const swapped = `${a.token.split('.').slice(0, 2).join('.')}.${b.token.split('.')[2]}`;
    expect(await verifies(swapped, a.key)).toBe(false);
    expect(started).toHaveLength(2);
  });

  it('makes the signatures of a thread that dies on the pool, and starts a new thread', async () => {
    const started: Worker[] = [];
    const signer = createThreadSigner({ threads: 1, inlineEs256Max: 0, onThreadStart: (w) => started.push(w) });
    signers.push(signer);
    const key = await generateSigningKey('ES256');
    expect(await verifies(await signCompactJwt(key, { first: true }, signer), key)).toBe(true);
    // Kill the thread while a batch is in flight.
    const inFlight = Promise.all(Array.from({ length: 20 }, (_, i) => signCompactJwt(key, { i }, signer)));
    await new Promise((r) => setImmediate(r));
    await started[0]?.terminate();
    for (const token of await inFlight) expect(await verifies(token, key)).toBe(true);
    expect(await verifies(await signCompactJwt(key, { after: true }, signer), key)).toBe(true);
    expect(started).toHaveLength(2);
  });

  it('waits for the batches in flight when closed, then signs on the pool', async () => {
    const signer = createThreadSigner({ threads: 1 });
    const key = await generateSigningKey('RS256');
    const pending = Promise.all(Array.from({ length: 10 }, (_, i) => signCompactJwt(key, { i }, signer)));
    await signer.close();
    for (const token of await pending) expect(await verifies(token, key)).toBe(true);
    expect(await verifies(await signCompactJwt(key, { late: true }, signer), key)).toBe(true);
  });

  it('never mixes up two keys that share a kid', async () => {
    const signer = createThreadSigner({ threads: 1, inlineEs256Max: 0 });
    signers.push(signer);
    const a = await generateSigningKey('ES256');
    const other = await generateSigningKey('ES256');
    const b = { ...other, kid: a.kid, publicJwk: { ...other.publicJwk, kid: a.kid } };
    const [ta, tb] = await Promise.all([signCompactJwt(a, { k: 'a' }, signer), signCompactJwt(b, { k: 'b' }, signer)]);
    expect(await verifies(ta as string, a)).toBe(true);
    expect(await verifies(tb as string, b)).toBe(true);
    expect(await verifies(await signCompactJwt(b, { again: true }, signer), b)).toBe(true);
  });

  it('makes a turn of a few ES256 signatures on the event loop, more on the threads, RS256 always on the threads', async () => {
    const started: Worker[] = [];
    const signer = createThreadSigner({ threads: 1, inlineEs256Max: 3, onThreadStart: (w) => started.push(w) });
    signers.push(signer);
    const es = await generateSigningKey('ES256');
    const few = await Promise.all(Array.from({ length: 3 }, (_, i) => signCompactJwt(es, { i }, signer)));
    for (const token of few) expect(await verifies(token, es)).toBe(true);
    expect(started).toHaveLength(0);
    const many = await Promise.all(Array.from({ length: 4 }, (_, i) => signCompactJwt(es, { i }, signer)));
    for (const token of many) expect(await verifies(token, es)).toBe(true);
    expect(started).toHaveLength(1);
    // The same key twice in a turn still signs each payload, not one signature for both.
    const [a, b] = await Promise.all([signCompactJwt(es, { n: 1 }, signer), signCompactJwt(es, { n: 2 }, signer)]);
    expect(a?.split('.')[2]).not.toBe(b?.split('.')[2]);
    const rsSigner = createThreadSigner({ threads: 1, inlineEs256Max: 3, onThreadStart: (w) => started.push(w) });
    signers.push(rsSigner);
    const rs = await generateSigningKey('RS256');
    expect(await verifies(await signCompactJwt(rs, { one: true }, rsSigner), rs)).toBe(true);
    expect(started).toHaveLength(2);
  });

  it('lets go of a forgotten key in every thread, and sends it again if it is used after all', async () => {
    const started: Worker[] = [];
    const signer = createThreadSigner({ threads: 2, inlineEs256Max: 0, onThreadStart: (w) => started.push(w) });
    signers.push(signer);
    const a = await generateSigningKey('ES256');
    const b = await generateSigningKey('RS256');
    await Promise.all(Array.from({ length: 8 }, (_, i) => signCompactJwt(i % 2 ? a : b, { i }, signer)));
    const held = () =>
      Promise.all(
        started.map(
          (w) =>
            new Promise<number>((resolve) => {
              const on = (m: { keysHeld?: number }) => {
                if (m.keysHeld === undefined) return;
                w.off('message', on);
                resolve(m.keysHeld);
              };
              w.on('message', on);
              w.postMessage({ type: 'count' });
            }),
        ),
      );
    expect(await held()).toEqual([2, 2]);
    signer.forget(a);
    expect(await held()).toEqual([1, 1]);
    signer.forget(a); // twice: nothing more to do
    // A request that still holds the key (it was asked for before the key was dropped) is signed.
    const late = await signCompactJwt(a, { late: true }, signer);
    expect(await verifies(late, a)).toBe(true);
    signer.forget(a);
    signer.forget(b);
    expect(await held()).toEqual([0, 0]);
    poolSigner.forget(a);
  });

  it('signs with the same keys as the pool signer (the same signature scheme)', async () => {
    const key = await generateSigningKey('ES256');
    expect(await verifies(await signCompactJwt(key, { via: 'pool' }, poolSigner), key)).toBe(true);
  });
});
