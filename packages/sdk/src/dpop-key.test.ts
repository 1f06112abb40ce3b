/**
 * The DPoP key `identity.dpopToken()` makes (identity.ts, processDpopKey): one ES256 pair per process,
 * WebCrypto `extractable: false`, so no code path can read, log or send the private key. Against a real
 * server (a deployment's run, claimed like a worker), with the flow executed in this process.
 */
import { randomUUID } from 'node:crypto';
import { putTestDeployment, startTestServer, type TestServer } from '@tessera/testing';
import { type CryptoKey, calculateJwkThumbprint, decodeJwt, exportJWK } from 'jose';
import { afterAll, afterEach, beforeAll, expect, it, vi } from 'vitest';
import { flow } from './flow.js';
import { identity } from './identity.js';
import { FlowRunEngine } from './runner/engine.js';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ backgroundServices: false });
  await server.client.createWorkPool({ name: 'default' });
  await putTestDeployment(server, {
    name: 'bound',
    flowName: 'bound',
    entrypoint: 'flows.ts:bound',
    identity: { audiences: ['vault.internal'] },
  });
});
afterAll(async () => server.close());
afterEach(() => vi.restoreAllMocks());

// Catches: the SDK generating its DPoP key pair extractable (or exporting it anywhere), so that
// flow code — or a dependency it imports — could read the private key and bind tokens elsewhere.
it('the private key behind a DPoP-bound token cannot be exported', async () => {
  const made: { publicKey: CryptoKey; privateKey: CryptoKey }[] = [];
  const generateKey = crypto.subtle.generateKey.bind(crypto.subtle);
  vi.spyOn(crypto.subtle, 'generateKey').mockImplementation((async (...args: Parameters<typeof generateKey>) => {
    const key = await generateKey(...args);
    if ('privateKey' in key) made.push(key);
    return key;
  }) as typeof crypto.subtle.generateKey);

  const { id: runId } = await server.client.runDeployment('bound');
  const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w-1', capacity: 1, running: [], waitMs: 0 });
  const claimed = poll.runs.find((r) => r.run.id === runId);
  if (!claimed) throw new Error(`run ${runId} was not claimed`);
  const bound = flow({ name: 'bound' }, async () => {
    const t = await identity.dpopToken({ audience: 'vault.internal' });
    const again = await identity.dpopToken({ audience: 'vault.internal' });
    return { token: t.token, jkt: t.jkt, againJkt: again.jkt };
  });
  const engine = new FlowRunEngine({
    client: server.client.withToken(claimed.credential),
    run: claimed.run,
    loadFlow: async () => bound,
    printLogs: false,
  });
  const outcome = await engine.execute();
  expect(outcome.error).toBeNull();
  const { token, jkt, againJkt } = outcome.result as { token: string; jkt: string; againJkt: string };

  // One pair for the process, and it is the one the token is bound to.
  expect(againJkt).toBe(jkt);
  expect(made).toHaveLength(1);
  const [pair] = made as [{ publicKey: CryptoKey; privateKey: CryptoKey }];
  expect(decodeJwt(token).cnf).toEqual({ jkt });
  const publicJwk = await exportJWK(pair.publicKey);
  expect(await calculateJwkThumbprint({ kty: publicJwk.kty, crv: publicJwk.crv, x: publicJwk.x, y: publicJwk.y })).toBe(jkt);

  expect(pair.privateKey.algorithm).toMatchObject({ name: 'ECDSA', namedCurve: 'P-256' });
  expect(pair.privateKey.extractable).toBe(false);
  await expect(crypto.subtle.exportKey('jwk', pair.privateKey)).rejects.toThrow();
  await expect(crypto.subtle.exportKey('pkcs8', pair.privateKey)).rejects.toThrow();
});
