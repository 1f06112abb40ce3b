/**
 * Signing threads for a busy issuer. Node's `crypto.sign` with a callback runs each signature on the
 * libuv pool: cheap in CPU, but every call wakes a sleeping pool thread, and on a small machine the
 * woken thread takes the core the event loop was on — the event loop pays about as much as the
 * signature itself. A signer thread takes the signatures of every request that reached the same turn
 * of the event loop in one message, signs them one after another, and answers in one message: one
 * wake-up per batch instead of one per token.
 *
 * Keys are sent to a thread once (a `KeyObject` is cloned across threads, never exported). If a thread
 * fails, its pending signatures are made again on the pool, and a new thread replaces it.
 *
 * A turn with only a few ES256 signatures makes them on the event loop itself: one costs about 40 µs,
 * no more than handing it to a thread and taking the answer back costs the loop (a message out, a
 * message in, another turn), and it spares the thread's wake-up, which under light load is most of
 * the signature's latency. RSA signatures (≈ 0.4 ms) always go to the threads.
 */

import { KeyObject, sign } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { CryptoKey } from 'jose';
import type { SigningKey } from './keys.js';

/** Signs JWS signing inputs (`header.payload`) with issuer keys. */
export interface JwsSigner {
  /** The base64url signature of `input` with `key` (RS256: PKCS#1 v1.5; ES256: R‖S, 64 bytes). */
  sign(key: SigningKey, input: string): Promise<string>;
  /** Lets go of every copy of `key` the signer made (a thread's clone); signing with it later sends it again. */
  forget(key: SigningKey): void;
  /** Stops the threads; later calls sign on the pool. */
  close(): Promise<void>;
}

/** Node key objects of the signing keys (same key material, no copy: `KeyObject.from` wraps it). */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();

function keyObjectOf(key: SigningKey): KeyObject {
  let k = keyObjects.get(key.privateKey);
  if (k === undefined) {
    k = KeyObject.from(key.privateKey);
    keyObjects.set(key.privateKey, k);
  }
  return k;
}

/**
 * A number per private key, which the threads know their keys by. Not the `kid`: a caller may give
 * two keys the same `kid`, and a thread must never sign with the other one.
 */
const keyIds = new WeakMap<CryptoKey, number>();
let nextKeyId = 0;

function keyIdOf(key: SigningKey): number {
  let id = keyIds.get(key.privateKey);
  if (id === undefined) {
    id = nextKeyId++;
    keyIds.set(key.privateKey, id);
  }
  return id;
}

/** The signature of `input`, made now on this thread (blocks it for the signature's time). */
function signNow(key: SigningKey, input: string): string {
  const keyObject = keyObjectOf(key);
  const signWith = key.alg === 'ES256' ? { key: keyObject, dsaEncoding: 'ieee-p1363' as const } : keyObject;
  return sign('sha256', Buffer.from(input), signWith).toString('base64url');
}

/** One signature on libuv's pool: the default, and the fallback of {@link createThreadSigner}. */
export function signOnPool(key: SigningKey, input: string): Promise<string> {
  const keyObject = keyObjectOf(key);
  const signWith = key.alg === 'ES256' ? { key: keyObject, dsaEncoding: 'ieee-p1363' as const } : keyObject;
  return new Promise((resolve, reject) => {
    sign('sha256', Buffer.from(input), signWith, (err, signature) => {
      if (err) reject(err);
      else resolve(signature.toString('base64url'));
    });
  });
}

/** The default signer: libuv's pool, nothing to start or stop. */
export const poolSigner: JwsSigner = { sign: signOnPool, forget: () => {}, close: async () => {} };

const THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { sign } = require('node:crypto');
const keys = new Map();
parentPort.on('message', (m) => {
  if (m.type === 'key') { keys.set(m.keyId, { key: m.key, alg: m.alg }); return; }
  if (m.type === 'forget') { keys.delete(m.keyId); return; }
  if (m.type === 'count') { parentPort.postMessage({ keysHeld: keys.size }); return; }
  const k = keys.get(m.keyId);
  const out = new Array(m.inputs.length);
  for (let i = 0; i < m.inputs.length; i++) {
    try {
      const signWith = k.alg === 'ES256' ? { key: k.key, dsaEncoding: 'ieee-p1363' } : k.key;
      out[i] = sign('sha256', Buffer.from(m.inputs[i]), signWith).toString('base64url');
    } catch (e) {
      out[i] = null;
    }
  }
  parentPort.postMessage({ id: m.id, signatures: out });
});
`;

interface Pending {
  key: SigningKey;
  input: string;
  resolve(signature: string): void;
  reject(e: unknown): void;
}

interface Thread {
  worker: Worker;
  /** The keys (by {@link keyIdOf}) this thread has. */
  keyIds: Set<number>;
  /** Batches sent and not answered. */
  inflight: Map<number, Pending[]>;
  dead: boolean;
}

/** Options of {@link createThreadSigner}. */
export interface ThreadSignerOptions {
  /** Signing threads. @default 2 */
  threads?: number;
  /** Most signatures in one message. @default 64 */
  maxBatch?: number;
  /**
   * A turn's ES256 signatures for one key, up to this many, are made on the event loop instead of a
   * thread (0: always on threads). @default 4
   */
  inlineEs256Max?: number;
  /** Called with each thread started (tests stop one to check the fallback). */
  onThreadStart?: (worker: Worker) => void;
}

/**
 * A {@link JwsSigner} on worker threads, batching the signatures asked for in one turn of the event
 * loop. Threads start at the first signature; a thread that dies is replaced, and the signatures it
 * held are made on the pool instead.
 */
export function createThreadSigner(options: ThreadSignerOptions = {}): JwsSigner {
  const size = Math.max(1, options.threads ?? 2);
  const maxBatch = Math.max(1, options.maxBatch ?? 64);
  const inlineEs256Max = Math.max(0, options.inlineEs256Max ?? 4);
  const threads: (Thread | undefined)[] = new Array(size).fill(undefined);
  let queue: Pending[] = [];
  let flushScheduled = false;
  let closed = false;
  let nextId = 0;
  let turn = 0;

  const start = (slot: number): Thread => {
    const worker = new Worker(THREAD_SOURCE, { eval: true });
    worker.unref();
    const t: Thread = { worker, keyIds: new Set(), inflight: new Map(), dead: false };
    worker.on('message', (m: { id: number; signatures: (string | null)[] }) => {
      const batch = t.inflight.get(m.id);
      if (!batch) return;
      t.inflight.delete(m.id);
      batch.forEach((p, i) => {
        const s = m.signatures[i];
        if (typeof s === 'string') p.resolve(s);
        else signOnPool(p.key, p.input).then(p.resolve, p.reject);
      });
    });
    const fail = () => {
      if (t.dead) return;
      t.dead = true;
      if (threads[slot] === t) threads[slot] = undefined;
      for (const batch of t.inflight.values()) for (const p of batch) signOnPool(p.key, p.input).then(p.resolve, p.reject);
      t.inflight.clear();
    };
    worker.on('error', fail);
    worker.on('exit', fail);
    threads[slot] = t;
    options.onThreadStart?.(worker);
    return t;
  };

  const flush = () => {
    flushScheduled = false;
    const all = queue;
    queue = [];
    // Group by key (a message carries one key), then send in batches, round-robin over the threads.
    const byKey = new Map<number, Pending[]>();
    for (const p of all) {
      const id = keyIdOf(p.key);
      const list = byKey.get(id);
      if (list) list.push(p);
      else byKey.set(id, [p]);
    }
    for (const [keyId, list] of byKey) {
      if (list.length <= inlineEs256Max && (list[0] as Pending).key.alg === 'ES256') {
        for (const p of list) {
          try {
            p.resolve(signNow(p.key, p.input));
          } catch {
            signOnPool(p.key, p.input).then(p.resolve, p.reject);
          }
        }
        continue;
      }
      // Spread over every thread: an RSA signature takes about 0.4 ms, so one thread signing a whole
      // turn's worth would make the last request of the batch wait for all the others.
      const chunk = Math.min(maxBatch, Math.ceil(list.length / size));
      for (let i = 0; i < list.length; i += chunk) {
        const batch = list.slice(i, i + chunk);
        const slot = turn++ % size;
        const t = (threads[slot] && !threads[slot]?.dead ? threads[slot] : undefined) ?? start(slot);
        const key = (batch[0] as Pending).key;
        try {
          if (!t.keyIds.has(keyId)) {
            t.worker.postMessage({ type: 'key', keyId, alg: key.alg, key: keyObjectOf(key) });
            t.keyIds.add(keyId);
          }
          const id = nextId++;
          t.inflight.set(id, batch);
          t.worker.postMessage({ type: 'sign', id, keyId, inputs: batch.map((p) => p.input) });
        } catch {
          for (const p of batch) signOnPool(p.key, p.input).then(p.resolve, p.reject);
        }
      }
    }
  };

  return {
    sign(key, input) {
      if (closed) return signOnPool(key, input);
      return new Promise((resolve, reject) => {
        queue.push({ key, input, resolve, reject });
        if (!flushScheduled) {
          flushScheduled = true;
          setImmediate(flush);
        }
      });
    },
    forget(key) {
      const keyId = keyIds.get(key.privateKey);
      if (keyId === undefined) return;
      for (const t of threads) {
        if (!t || t.dead || !t.keyIds.delete(keyId)) continue;
        // After any batch already sent with it: a thread takes its messages in order.
        t.worker.postMessage({ type: 'forget', keyId });
      }
    },
    async close() {
      closed = true;
      if (queue.length > 0) flush();
      await Promise.all(
        threads.map(async (t) => {
          if (!t) return;
          // Let the batches in flight come back, then stop.
          while (t.inflight.size > 0 && !t.dead) await new Promise((r) => setTimeout(r, 5));
          await t.worker.terminate();
        }),
      );
    },
  };
}
