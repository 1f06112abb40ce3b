/**
 * Run identity behaviours docs/identity.md promises that no other test pins down: introspection
 * after an emergency key revocation, a revoked identity surviving a retry, an issuer configured with
 * a trailing slash, `claims_supported` covering every claim a fully-optioned token carries, and DPoP
 * proofs naming a declared internal URL of the server.
 */
import { randomUUID } from 'node:crypto';
import type { DeploymentSpec, IntrospectionResponse } from '@tessera/core';
import { startServer } from '@tessera/server';
import { claimRun, failure, putTestDeployment, startTaskRun, startTestServer, type TestServer } from '@tessera/testing';
import { type CryptoKey, calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

function deploy(server: TestServer, spec: Partial<DeploymentSpec> & { name: string }) {
  return putTestDeployment(server, { identity: { audiences: ['vault.internal'] }, ...spec });
}

async function active(server: TestServer, token: string): Promise<boolean> {
  const res = await fetch(`${server.url}/api/identity/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as IntrospectionResponse).active;
}

async function discovery(server: TestServer): Promise<Record<string, unknown> & { issuer: string; claims_supported: string[] }> {
  return (await (await fetch(`${server.url}/.well-known/openid-configuration`)).json()) as never;
}

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ backgroundServices: false });
  await server.client.createWorkPool({ name: 'default' });
});
afterAll(async () => server.close());

describe('introspection after `keys rotate --revoke-current`', () => {
  // Catches: introspection checking only the run and the jti record, not that the signing key is still
  // published — a leaked key's tokens would stay "active" for relying parties that introspect.
  it('reports a token signed by the revoked key inactive, while the run is live and its new tokens are active', async () => {
    await deploy(server, { name: 'key-revoked', identity: { audiences: ['vault.internal'], algorithm: 'RS256' } });
    const { id: runId } = await server.client.runDeployment('key-revoked');
    const { as } = await claimRun(server, runId);
    const old = await as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30m' });
    expect(await active(server, old.token)).toBe(true);

    const rotated = await server.client.rotateSigningKeys({ revokeCurrent: true, algorithms: ['RS256'] });
    expect(rotated.revoked.map((k) => k.kid)).toEqual([old.kid]);
    expect(await active(server, old.token)).toBe(false);
    expect(await server.client.introspectToken(old.token)).toEqual({ active: false });

    // The run itself is untouched: a token from the new key is active.
    const fresh = await as.issueIdentityToken({ audience: 'vault.internal' });
    expect(fresh.kid).not.toBe(old.kid);
    expect(await active(server, fresh.token)).toBe(true);
    expect(await active(server, old.token)).toBe(false);
  });
});

describe('a revoked identity and a retry', () => {
  // docs/identity.md: "the run, this attempt and any retry, gets ERR_IDENTITY_REVOKED (403) for new tokens".
  // Catches: the revocation being tied to the attempt (or its credential) rather than to the run.
  it('refuses tokens to the new attempt with ERR_IDENTITY_REVOKED, through the client and the plain HTTP call', async () => {
    await deploy(server, { name: 'revoked-retried', retries: 1 });
    const { id: runId } = await server.client.runDeployment('revoked-retried');
    const first = await claimRun(server, runId);
    const old = await first.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30m' });
    await server.client.revokeRunIdentity(runId, { reason: 'token pasted in a ticket' });
    expect((await failure(first.as.issueIdentityToken({ audience: 'vault.internal' }))).code).toBe('ERR_IDENTITY_REVOKED');

    const failed = await first.as.proposeState(runId, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'boom' } });
    expect(failed.retryScheduled).toBe(true);
    const second = await claimRun(server, runId, { workerName: 'w-2' });
    expect((await server.client.getFlowRun(runId)).attempt).toBe(2);

    const e = await failure(second.as.issueIdentityToken({ audience: 'vault.internal' }));
    expect(e.code).toBe('ERR_IDENTITY_REVOKED');
    expect(e.status).toBe(403);
    const res = await fetch(`${server.url}/api/identity/token`, {
      method: 'POST',
      headers: { authorization: `Bearer ${second.credential}`, 'content-type': 'application/json' },
      body: '{"audience":"vault.internal"}',
    });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { code: string }).code).toBe('ERR_IDENTITY_REVOKED');
    expect(await active(server, old.token)).toBe(false);
    // The retry itself goes on: its orchestration credential still reports states.
    expect((await second.as.proposeState(runId, { state: { type: 'COMPLETED' }, result: null })).status).toBe('ACCEPT');
  });
});

describe('a public URL with a trailing slash', () => {
  // Catches: the trailing slash of --public-url reaching `iss` or the discovery document (server.ts trims
  // it); AWS, Azure and Vault compare `iss` to the configured issuer as strings.
  it.each([
    ['https://tessera.example.com/', 'https://tessera.example.com'],
    ['https://example.com/tessera//', 'https://example.com/tessera'],
  ])('%s: iss equals the discovery issuer exactly (%s), with no trailing slash', async (publicUrl, expected) => {
    const s = await startTestServer({ backgroundServices: false, publicUrl });
    try {
      await s.client.createWorkPool({ name: 'default' });
      await deploy(s, { name: 'slashed' });
      const { id: runId } = await s.client.runDeployment('slashed');
      const { as } = await claimRun(s, runId);
      const doc = await discovery(s);
      expect(doc.issuer).toBe(expected);
      expect(s.issuer).toBe(expected);
      expect(doc.jwks_uri).toBe(`${expected}/.well-known/jwks.json`);
      const { token } = await as.issueIdentityToken({ audience: 'vault.internal' });
      const { iss } = decodeJwt(token);
      expect(iss).toBe(doc.issuer);
      expect(iss?.endsWith('/')).toBe(false);
      // Introspection checks `iss` exactly too.
      expect(await active(s, token)).toBe(true);
    } finally {
      await s.close();
    }
  });
});

describe('claims_supported', () => {
  // keys.test.ts compares claims_supported with RUN_TOKEN_CLAIM_NAMES, i.e. with itself. This catches a
  // claim added to tokens (or an optional one: cnf, the AWS tags, task, task_run_id) but not to the list.
  it('lists every claim of a fully-optioned token: DPoP-bound, AWS session tags, asked from a task', async () => {
    await deploy(server, {
      name: 'every-claim',
      project: 'data',
      tags: ['nightly'],
      identity: { audiences: ['vault.internal'], awsSessionTags: true, subTemplate: ['workspace', 'deployment_id', 'environment'] },
    });
    const { id: runId } = await server.client.runDeployment('every-claim', { tags: ['adhoc'] });
    const { as } = await claimRun(server, runId);
    const taskRunId = await startTaskRun(as, runId, { key: 'load', name: 'load-1' });
    const pair = await generateKeyPair('ES256', { extractable: false });
    const jwk = await exportJWK(pair.publicKey);
    const proof = await new SignJWT({ htm: 'POST', htu: `${server.url}/api/identity/token`, jti: randomUUID() })
      .setIssuedAt()
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .sign(pair.privateKey as CryptoKey);
    const issued = await as.issueDpopIdentityToken({ audience: 'vault.internal', taskRunId, taskName: 'load' }, proof);
    const payload = decodeJwt(issued.token);
    // Fully optioned: each optional claim is really there.
    expect(payload).toMatchObject({
      cnf: { jkt: await calculateJwkThumbprint(jwk) },
      'https://aws.amazon.com/tags': expect.any(Object),
      task: 'load',
      task_run_id: taskRunId,
    });
    const { claims_supported } = await discovery(server);
    const missing = Object.keys(payload).filter((c) => !claims_supported.includes(c));
    expect(missing, `claims in the token but not in claims_supported`).toEqual([]);
    expect(decodeProtectedHeader(issued.token).typ).toBe('JWT');
  });
});

describe('error bodies', () => {
  // Catches: masking the error body as JSON text. A control character before a JWT-like value becomes
  // the escape \u001e, whose last letter starts the look-alike; masking it broke the escape, the body
  // no longer parsed, and a 403 became a 500. (Its own server: this value looks like a token in a log.)
  it('stay well-formed when a value sent is masked next to a JSON escape', async () => {
    await deploy(server, { name: 'escapes' });
    const { credential } = await claimRun(server, (await server.client.runDeployment('escapes')).id);
    // A JWT-shaped value, made here, whose leading "e" is the last letter of the escape \u001e.
    const shaped = [{ alg: 'ES256' }, { sub: 'x' }, 'signature-sig'].map((p) =>
      Buffer.from(typeof p === 'string' ? p : JSON.stringify(p)).toString('base64url'),
    );
    const audience = `\u001e${shaped.join('.').slice(1)}`;
    const res = await fetch(`${server.url}/api/identity/token`, {
      method: 'POST',
      headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
      body: JSON.stringify({ audience }),
    });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ code: 'ERR_AUDIENCE_NOT_ALLOWED' });
  });
});

describe('the token endpoint’s credential check (credential and run read in one statement)', () => {
  // Catches: the token endpoint's own credential lookup (RunCredentialAuthenticator's preload) being
  // laxer than every other route's: an unknown, a revoked, or another attempt's credential.
  it('refuses what every other route refuses, with the same codes', async () => {
    await deploy(server, { name: 'preload', retries: 1 });
    const runId = (await server.client.runDeployment('preload')).id;
    const first = await claimRun(server, runId);
    expect((await first.as.issueIdentityToken({ audience: 'vault.internal' })).token).toMatch(/^eyJ/);

    const unknown = server.client.withToken(`tsr_${'x'.repeat(43)}`);
    expect((await failure(unknown.issueIdentityToken({ audience: 'vault.internal' }))).code).toBe('ERR_CREDENTIAL_INVALID');
    expect((await failure(unknown.getFlowRun(runId))).code).toBe('ERR_CREDENTIAL_INVALID');

    // The attempt fails and is retried: its credential is revoked, the retry's is live.
    await first.as.proposeState(runId, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'boom' } });
    await server.services.ctx.db
      .updateTable('flow_runs')
      .set({ next_scheduled_start_time: new Date(Date.now() - 1000).toISOString() })
      .where('id', '=', runId)
      .execute();
    const second = await claimRun(server, runId, { workerName: 'w-2' });
    // Both handled at once: a second request refused while the first is awaited is not an unhandled rejection.
    const stale = await Promise.all([
      failure(first.as.issueIdentityToken({ audience: 'vault.internal' })),
      failure(first.as.getFlowRun(runId)),
    ]);
    for (const e of stale) expect([e.code, e.status]).toEqual(['ERR_CREDENTIAL_REVOKED', 401]);
    const fresh = await second.as.issueIdentityToken({ audience: 'vault.internal' });
    expect(decodeJwt(fresh.token)).toMatchObject({ run_id: runId, run_attempt: 2 });
  });
});

describe('DPoP through an internal URL', () => {
  // Catches: workers in a cluster reach the server at a service name that is neither the public issuer
  // nor the listen address; their runs' DPoP proofs name that URL, and were refused on htu.
  async function proofFor(htu: string) {
    const pair = await generateKeyPair('ES256', { extractable: false });
    const jwk = await exportJWK(pair.publicKey);
    return new SignJWT({ htm: 'POST', htu, jti: randomUUID() })
      .setIssuedAt()
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .sign(pair.privateKey as CryptoKey);
  }

  it('accepts a proof naming a declared internal URL, and still refuses any other', async () => {
    const s = await startTestServer({
      backgroundServices: false,
      publicUrl: 'https://tessera.example.com',
      internalUrls: ['http://Tessera.tessera.svc:4200/', 'https://tessera-internal.corp'],
    });
    try {
      await s.client.createWorkPool({ name: 'default' });
      await deploy(s, { name: 'in-cluster' });
      const { as } = await claimRun(s, (await s.client.runDeployment('in-cluster')).id);
      for (const base of ['http://tessera.tessera.svc:4200', 'https://tessera-internal.corp:443', 'https://tessera.example.com']) {
        const issued = await as.issueDpopIdentityToken({ audience: 'vault.internal' }, await proofFor(`${base}/api/identity/token`));
        expect(decodeJwt(issued.token).cnf).toBeDefined();
      }
      const e = await failure(
        as.issueDpopIdentityToken({ audience: 'vault.internal' }, await proofFor('http://tessera.other.svc:4200/api/identity/token')),
      );
      expect(e.code).toBe('ERR_DPOP_PROOF_INVALID');
      expect(e.message).toContain('http://tessera.tessera.svc:4200/api/identity/token');
    } finally {
      await s.close();
    }
  });

  it('refuses an internal URL with a path, a query or credentials, naming the field', async () => {
    for (const [url, why] of [
      ['http://tessera.svc:4200/api', 'no path'],
      ['http://tessera.svc:4200?x=1', 'no path'],
      ['http://ana:pw@tessera.svc:4200', 'credentials'],
      ['admin:pw@tessera.svc:4200', 'credentials'],
      ['ftp://tessera.svc', 'http or https'],
      ['tessera.svc:4200', 'http or https'],
    ] as const) {
      const e = await startServer({ port: 0, internalUrls: ['http://ok.svc', url], logLevel: 'silent' }).then(
        async (s) => {
          await s.close();
          throw new Error(`${url} was accepted`);
        },
        (err: { code?: string; message: string }) => err,
      );
      expect(e.code, url).toBe('ERR_CONFIG');
      expect(e.message, url).toContain('internalUrls[1]');
      expect(e.message, url).toContain(why);
      expect(e.message).not.toContain('pw@');
    }
  });
});
