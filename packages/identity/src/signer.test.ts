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
    const signer = createThreadSigner({ threads: 2, maxBatch: 8, onThreadStart: (w) => started.push(w) });
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
    const signer = createThreadSigner({ threads: 1, onThreadStart: (w) => started.push(w) });
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
    const signer = createThreadSigner({ threads: 1 });
    signers.push(signer);
    const a = await generateSigningKey('ES256');
    const other = await generateSigningKey('ES256');
    const b = { ...other, kid: a.kid, publicJwk: { ...other.publicJwk, kid: a.kid } };
    const [ta, tb] = await Promise.all([signCompactJwt(a, { k: 'a' }, signer), signCompactJwt(b, { k: 'b' }, signer)]);
    expect(await verifies(ta as string, a)).toBe(true);
    expect(await verifies(tb as string, b)).toBe(true);
    expect(await verifies(await signCompactJwt(b, { again: true }, signer), b)).toBe(true);
  });

  it('signs with the same keys as the pool signer (the same signature scheme)', async () => {
    const key = await generateSigningKey('ES256');
    expect(await verifies(await signCompactJwt(key, { via: 'pool' }, poolSigner), key)).toBe(true);
  });
});
