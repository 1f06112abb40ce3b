import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import type { ApiClient, TesseraError } from '@tessera/core';
import { createFakeClock, startTestServer, type TestServer } from '@tessera/testing';
import { createVerifier, VerificationError } from '@tessera/verify';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as TesseraError).code;
  }
  throw new Error('expected a failure');
}

describe('run identity tokens', () => {
  let server: TestServer;
  let as: ApiClient;
  let runId: string;

  beforeAll(async () => {
    server = await startTestServer({ backgroundServices: false, settings: { tokenRateLimitPerMinute: 20 } });
    await server.client.createWorkPool({ name: 'default' });
    await server.client.putDeployment({
      name: 'nightly-etl',
      flowName: 'etl',
      entrypoint: 'flows.ts:etl',
      path: '/tmp',
      workPool: 'default',
      environment: 'prod',
      identity: { audiences: ['sts.amazonaws.com', 'vault.internal'], maxLifetimeMs: 30 * 60_000 },
    });
    const r = await server.client.runDeployment('nightly-etl');
    runId = r.id;
    const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w-1', capacity: 1, running: [], waitMs: 0 });
    as = server.client.withToken(poll.runs[0]?.credential);
    await as.proposeState(runId, { state: { type: 'RUNNING' } });
  });
  afterAll(async () => server.close());

  it('publishes a discovery document whose issuer equals iss exactly', async () => {
    const doc = (await (await fetch(`${server.url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    expect(doc.issuer).toBe(server.issuer);
    expect(doc.jwks_uri).toBe(`${server.issuer}/.well-known/jwks.json`);
    expect(doc.id_token_signing_alg_values_supported).toContain('RS256');
    const jwksRes = await fetch(String(doc.jwks_uri));
    expect(jwksRes.headers.get('cache-control')).toMatch(/max-age=\d+/);
    const jwks = (await jwksRes.json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const k of jwks.keys) {
      expect(k.kid).toBeTruthy();
      expect(k.d).toBeUndefined();
      expect(k.p).toBeUndefined();
    }
  });

  it('issues a token that verifies with jose through discovery and JWKS, with every claim', async () => {
    const { token, sub, kid } = await as.issueIdentityToken({ audience: 'sts.amazonaws.com' });
    const header = decodeProtectedHeader(token);
    expect(header).toMatchObject({ alg: 'RS256', typ: 'JWT', kid });
    const doc = (await (await fetch(`${server.url}/.well-known/openid-configuration`)).json()) as { jwks_uri: string; issuer: string };
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(doc.jwks_uri)), {
      issuer: doc.issuer,
      audience: 'sts.amazonaws.com',
    });
    expect(payload).toMatchObject({
      iss: server.issuer,
      sub: 'ws:default:deployment:nightly-etl:env:prod',
      aud: 'sts.amazonaws.com',
      run_id: runId,
      run_attempt: 1,
      flow: 'etl',
      deployment: 'nightly-etl',
      work_pool: 'default',
      worker: 'w-1',
      environment: 'prod',
      trigger_kind: 'manual',
      triggered_by: 'person:local admin',
    });
    expect(payload.sub).toBe(sub);
    expect((payload.exp as number) - (payload.iat as number)).toBe(300);
    expect(payload.nbf as number).toBeLessThan(payload.iat as number);
    expect(payload.jti).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('verifies with PyJWT from a separate process', async () => {
    const { token } = await as.issueIdentityToken({ audience: 'vault.internal' });
    const script = `
import json, sys, urllib.request, jwt
issuer, aud, token = sys.argv[1], sys.argv[2], sys.argv[3]
doc = json.load(urllib.request.urlopen(issuer + "/.well-known/openid-configuration"))
key = jwt.PyJWKClient(doc["jwks_uri"]).get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=aud, issuer=doc["issuer"])
print(json.dumps(claims))
`;
    const { stdout } = await run('/usr/bin/python3', ['-c', script, server.issuer, 'vault.internal', token]);
    expect(JSON.parse(stdout)).toMatchObject({ aud: 'vault.internal', run_id: runId });
    const wrong = await run('/usr/bin/python3', ['-c', script, server.issuer, 'sts.amazonaws.com', token]).catch(
      (e: { stderr: string }) => e,
    );
    expect((wrong as { stderr: string }).stderr).toContain('InvalidAudienceError');
  });

  it('is refused by a verifier expecting another audience', async () => {
    const { token } = await as.issueIdentityToken({ audience: 'vault.internal' });
    const verifier = createVerifier({ issuer: server.issuer, audience: 'sts.amazonaws.com' });
    const e = await verifier.verify(token).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(VerificationError);
    expect((e as VerificationError).reason).toBe('ERR_AUDIENCE_MISMATCH');
    expect((e as VerificationError).message).toContain('token aud "vault.internal"');
    expect(await createVerifier({ issuer: server.issuer, audience: 'vault.internal' }).verify(token)).toMatchObject({ run_id: runId });
    const wrongIssuer = await createVerifier({ issuer: `${server.issuer}/`, audience: 'vault.internal' })
      .verify(token)
      .catch((err: VerificationError) => err.reason);
    expect(wrongIssuer).toBe('ERR_DISCOVERY_FAILED');
  });

  it('refuses an audience not on the deployment allowlist, suggesting the near miss', async () => {
    const e = await as.issueIdentityToken({ audience: 'sts.amazon.com' }).catch((err: TesseraError) => err);
    expect(e.code).toBe('ERR_AUDIENCE_NOT_ALLOWED');
    expect(e.status).toBe(403);
    expect(e.message).toBe(
      'audience "sts.amazon.com" is not allowed for deployment "nightly-etl" — allowed: sts.amazonaws.com, vault.internal. Did you mean "sts.amazonaws.com"?',
    );
  });

  it('requires an audience, and caps the lifetime at the deployment maximum', async () => {
    expect(await code(as.issueIdentityToken({ audience: '' }))).toBe('ERR_AUDIENCE_REQUIRED');
    expect(await code(as.issueIdentityToken({ audience: 'vault.internal', lifetime: '2h' }))).toBe('ERR_VALIDATION');
    const long = await as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30m' });
    expect(Date.parse(long.expiresAt) - Date.now()).toBeGreaterThan(29 * 60_000);
  });

  it('never puts a token or credential in the server log', async () => {
    const joined = server.logs.join('\n');
    expect(joined).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
    expect(joined).not.toMatch(/tsr_[A-Za-z0-9_-]{20,}/);
  });

  it('answers 429 once a run asks for too many tokens in a minute', async () => {
    const codes: string[] = [];
    for (let i = 0; i < 25; i++)
      codes.push(
        await as.issueIdentityToken({ audience: 'vault.internal' }).then(
          () => 'ok',
          (e: TesseraError) => `${e.code}:${e.status}`,
        ),
      );
    expect(codes).toContain('ERR_RATE_LIMITED:429');
  });
});

describe('the per-run rate limit', () => {
  it('is a sliding minute: refused until the oldest request is 60 s old, with Retry-After counting down to it', async () => {
    const clock = createFakeClock('2026-11-28T12:00:00Z');
    const server = await startTestServer({ clock, backgroundServices: false, settings: { tokenRateLimitPerMinute: 5 } });
    try {
      await server.client.createWorkPool({ name: 'default' });
      await server.client.putDeployment({
        name: 'limited',
        flowName: 'etl',
        entrypoint: 'flows.ts:etl',
        path: '/tmp',
        workPool: 'default',
        identity: { audiences: ['vault.internal'] },
      });
      const r = await server.client.runDeployment('limited');
      const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 });
      const as = server.client.withToken(poll.runs[0]?.credential);
      await as.proposeState(r.id, { state: { type: 'RUNNING' } });
      const ask = () =>
        as.issueIdentityToken({ audience: 'vault.internal' }).then(
          () => 'ok',
          (e: TesseraError) => `${e.code}:${(e.details as { retryAfterSeconds?: number } | undefined)?.retryAfterSeconds}`,
        );
      // Two at 12:00:00, three at 12:00:20: the limit of 5 is reached.
      expect([await ask(), await ask()]).toEqual(['ok', 'ok']);
      clock.advance(20_000);
      expect([await ask(), await ask(), await ask()]).toEqual(['ok', 'ok', 'ok']);
      expect(await ask()).toBe('ERR_RATE_LIMITED:40');
      clock.advance(39_000);
      expect(await ask()).toBe('ERR_RATE_LIMITED:1');
      // 12:01:00: the two oldest leave the window; two more fit, not three.
      clock.advance(1_000);
      expect([await ask(), await ask(), await ask()]).toEqual(['ok', 'ok', 'ERR_RATE_LIMITED:20']);
      // 12:01:20: the three from 12:00:20 leave too.
      clock.advance(20_000);
      expect([await ask(), await ask(), await ask(), await ask()]).toEqual(['ok', 'ok', 'ok', 'ERR_RATE_LIMITED:40']);
    } finally {
      await server.close();
    }
  });
});

describe('runs without a deployment', () => {
  it('get no identity tokens: nothing allows an audience for them', async () => {
    const server = await startTestServer({ backgroundServices: false });
    try {
      const { credential } = await server.client.createAdhocRun({ flowName: 'scratch' });
      const e = await server.client
        .withToken(credential)
        .issueIdentityToken({ audience: 'x' })
        .catch((err: TesseraError) => err);
      expect(e.code).toBe('ERR_NO_IDENTITY');
    } finally {
      await server.close();
    }
  });
});
