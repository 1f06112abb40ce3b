import { randomUUID } from 'node:crypto';
import { type ApiClient, createApiClient, JWT_TOKEN_TYPE, type TesseraError, TOKEN_EXCHANGE_GRANT } from '@tessera/core';
import { githubActionsClaims, startTestIssuer, startTestServer, type TestIssuer, type TestServer } from '@tessera/testing';
import { createVerifier } from '@tessera/verify';
import { decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CI_AUDIENCE = 'https://tessera.example.com/ci';
const REPO = 'acme/etl';
const JWT_RE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as TesseraError).code;
  }
  throw new Error('expected a failure');
}

/** POSTs a form to the token endpoint and answers status + body. */
async function tokenRequest(url: string, form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('federation: RFC 8693 token exchange under trust policies', () => {
  let server: TestServer;
  let gh: TestIssuer;
  let other: TestIssuer;
  let admin: ApiClient;
  const secrets: string[] = [];

  /** Claims `runId` and asks for a run token with the API's own audience, as a flow would. */
  const apiAudienceToken = async (runId: string) => {
    const claimed = await server.services.claims.poll('default', {
      workerId: randomUUID(),
      workerName: 'w',
      capacity: 5,
      running: [],
      waitMs: 0,
    });
    const credential = claimed.runs.find((r) => r.run.id === runId)?.credential as string;
    secrets.push(credential);
    const issued = await createApiClient({ baseUrl: server.url, token: credential }).issueIdentityToken({
      audience: `${server.issuer}/api`,
    });
    secrets.push(issued.token);
    return issued;
  };
  const exchange = async (subjectToken: string) => {
    secrets.push(subjectToken);
    const r = await tokenRequest(server.url, {
      grant_type: TOKEN_EXCHANGE_GRANT,
      subject_token: subjectToken,
      subject_token_type: JWT_TOKEN_TYPE,
    });
    if (typeof r.body.access_token === 'string') secrets.push(r.body.access_token);
    return r;
  };
  const clientFor = async (subjectToken: string) => {
    const r = await exchange(subjectToken);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return createApiClient({ baseUrl: server.url, token: r.body.access_token as string });
  };
  const ghToken = (overrides: Record<string, unknown> = {}, options = {}) =>
    gh.mint({ ...githubActionsClaims({ repository: REPO, aud: CI_AUDIENCE }), ...overrides }, options);

  beforeAll(async () => {
    gh = await startTestIssuer();
    other = await startTestIssuer();
    server = await startTestServer({
      backgroundServices: false,
      auth: {
        localAdmin: false,
        trustPolicies: {
          // Bootstrap: an admin pipeline, declared in configuration.
          'gh-admin': {
            issuer: gh.issuer,
            audience: CI_AUDIENCE,
            subject: 'repo:acme/platform:ref:refs/heads/main',
            role: 'admin',
          },
        },
      },
    });
    admin = await clientFor(await gh.mint(githubActionsClaims({ repository: 'acme/platform', aud: CI_AUDIENCE })));
    await admin.request('PUT', '/api/trust-policies/gh-deploy', {
      body: {
        issuer: gh.issuer,
        audience: CI_AUDIENCE,
        subject: `repo:${REPO}:ref:refs/heads/main`,
        condition: `claims.job_workflow_ref.startsWith("${REPO}/.github/workflows/") && claims.event_name != "pull_request"`,
        role: 'developer',
      },
    });
    await admin.createWorkPool({ name: 'default' });
  });
  afterAll(async () => {
    await server?.close();
    await gh?.close();
    await other?.close();
  });

  it('gives a matching GitHub Actions token a deploy-capable access token (typ at+jwt, aud the API, 15 min)', async () => {
    const r = await exchange(await ghToken());
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      token_type: 'Bearer',
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      expires_in: 900,
      principal: { kind: 'machine', id: `repo:${REPO}:ref:refs/heads/main`, grants: [{ role: 'developer' }] },
    });
    const token = r.body.access_token as string;
    expect(decodeProtectedHeader(token).typ).toBe('at+jwt');
    const ci = createApiClient({ baseUrl: server.url, token });
    const dep = await ci.putDeployment({
      name: 'etl',
      flowName: 'etl',
      entrypoint: 'flows.ts:etl',
      path: '/tmp',
      workPool: 'default',
      schedules: [{ cron: '0 2 * * *' }],
    });
    expect(dep.schedules[0]?.createdBy).toMatchObject({ kind: 'machine', id: `repo:${REPO}:ref:refs/heads/main` });
    // A developer deploys; running is an operator's job… and developer includes operator.
    const run = await ci.runDeployment('etl');
    expect(run.triggeredBy).toMatchObject({ kind: 'machine', label: `repo:${REPO}:ref:refs/heads/main` });
    // Started by software, not a person: its tokens will say trigger_kind "api".
    expect(run.triggerKind).toBe('api');
    // …but not admin settings.
    expect(await code(ci.request('GET', '/api/trust-policies'))).toBe('ERR_FORBIDDEN');
  });

  it('answers with the cache headers RFC 6749 §5.1 requires', async () => {
    const res = await fetch(`${server.url}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE_GRANT, subject_token: await ghToken(), subject_token_type: JWT_TOKEN_TYPE }),
    });
    expect(res.headers.get('cache-control')).toBe('no-store');
    secrets.push(((await res.json()) as { access_token: string }).access_token);
  });

  it('refuses a token whose sub differs, naming its sub to the caller and each policy’s pattern to admins only (the audit log)', async () => {
    const r = await exchange(await ghToken({ sub: `repo:${REPO}:ref:refs/heads/feature-x`, ref: 'refs/heads/feature-x' }));
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_POLICY_DENIED' });
    expect(r.body.error_description).toContain(
      `no trust policy for issuer "${gh.issuer}" accepts this token (sub "repo:${REPO}:ref:refs/heads/feature-x")`,
    );
    expect(r.body.error_description).toContain('tessera audit --action token.exchange');
    // Anyone can mint a token on a shared issuer: the policies' names, patterns and conditions stay private.
    for (const secret of ['gh-deploy', 'gh-admin', 'refs/heads/main', 'event_name', 'acme/platform'])
      expect(r.body.error_description).not.toContain(secret);
    expect(r.body.message).toBe(r.body.error_description);
    const events = (
      await admin.request<{ items: { action: string; result: string; detail: { reason?: string } }[] }>('GET', '/api/audit', {
        query: { action: 'token.exchange', limit: 5 },
      })
    ).items;
    expect(events.filter((e) => e.result === 'denied').at(-1)?.detail.reason).toContain(
      `policy "gh-deploy": token sub "repo:${REPO}:ref:refs/heads/feature-x" does not match "repo:${REPO}:ref:refs/heads/main"`,
    );
  });

  it('refuses a token for another repository with the same audience (anyone on GitHub can mint one)', async () => {
    const r = await exchange(await gh.mint(githubActionsClaims({ repository: 'mallory/etl', aud: CI_AUDIENCE })));
    expect(r.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_POLICY_DENIED' });
  });

  it('refuses a token whose aud differs, naming the token’s audience (the expected one is in the audit log)', async () => {
    const r = await exchange(await ghToken({ aud: 'sts.amazonaws.com' }));
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_AUDIENCE_MISMATCH' });
    expect(r.body.error_description).toContain(`accepts this token (aud ["sts.amazonaws.com"])`);
    expect(r.body.error_description).not.toContain(CI_AUDIENCE);
  });

  it('refuses a token from an issuer no policy trusts', async () => {
    const r = await exchange(await other.mint(githubActionsClaims({ repository: REPO, aud: CI_AUDIENCE })));
    expect(r.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_ISSUER_MISMATCH' });
    expect(r.body.error_description).toContain(`issuer "${other.issuer}" is not trusted`);
  });

  it('refuses a token that claims a trusted issuer but is signed by another key', async () => {
    const forged = await other.mint(githubActionsClaims({ repository: REPO, aud: CI_AUDIENCE }), { issuer: gh.issuer });
    const r = await exchange(forged);
    expect(r.body).toMatchObject({ error: 'invalid_grant' });
    expect(['ERR_SIGNATURE_INVALID', 'ERR_KEY_NOT_FOUND']).toContain(r.body.code);
    const unpublished = await ghToken({}, { foreignKey: true });
    expect((await exchange(unpublished)).body.code).toBe('ERR_SIGNATURE_INVALID');
  });

  it('refuses an expired token', async () => {
    const r = await exchange(await ghToken({}, { expiresIn: -120, iatOffset: -600 }));
    expect(r.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_TOKEN_EXPIRED' });
  });

  it('refuses a token for which the condition is false', async () => {
    const r = await exchange(await ghToken({ event_name: 'pull_request' }));
    expect(r.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_POLICY_DENIED' });
    expect(r.body.error_description).not.toContain('condition');
    const events = (
      await admin.request<{ items: { result: string; detail: { reason?: string } }[] }>('GET', '/api/audit', {
        query: { action: 'token.exchange', limit: 5 },
      })
    ).items;
    expect(events.filter((e) => e.result === 'denied').at(-1)?.detail.reason).toMatch(/condition .* is not true for this token/);
  });

  it('answers malformed requests in RFC 6749 §5.2 form', async () => {
    expect((await tokenRequest(server.url, { grant_type: 'password', username: 'a', password: 'b' })).body).toMatchObject({
      error: 'unsupported_grant_type',
    });
    expect((await tokenRequest(server.url, {})).body).toMatchObject({ error: 'invalid_request', code: 'ERR_VALIDATION' });
    const noType = await tokenRequest(server.url, { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: 'x' });
    expect(noType.body).toMatchObject({ error: 'invalid_request' });
    const junk = await tokenRequest(server.url, {
      grant_type: TOKEN_EXCHANGE_GRANT,
      subject_token: 'not-a-jwt',
      subject_token_type: JWT_TOKEN_TYPE,
    });
    expect(junk.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_TOKEN_MALFORMED' });
    const res = await fetch(`${server.url}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=${encodeURIComponent(TOKEN_EXCHANGE_GRANT)}&subject_token=a&subject_token=b&subject_token_type=${encodeURIComponent(JWT_TOKEN_TYPE)}`,
    });
    expect(await res.json()).toMatchObject({ error: 'invalid_request', code: 'ERR_VALIDATION' });
  });

  it('refuses a run identity token as an API access token, and an access token at a relying party', async () => {
    const ci = await clientFor(await ghToken());
    await ci.putDeployment({
      name: 'api-aud',
      flowName: 'etl',
      entrypoint: 'flows.ts:etl',
      path: '/tmp',
      workPool: 'default',
      identity: { audiences: [`${server.issuer}/api`] },
    });
    const run = await ci.runDeployment('api-aud');
    const worker = await clientFor(await gh.mint(githubActionsClaims({ repository: 'acme/platform', aud: CI_AUDIENCE })));
    // The admin is no worker: workers poll.
    expect(await code(worker.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 }))).toBe(
      'ERR_FORBIDDEN',
    );
    // Issue a run token with the API's own audience, through a run credential (as a flow would).
    const issued = await apiAudienceToken(run.id);
    const asAccess = createApiClient({ baseUrl: server.url, token: issued.token });
    const err = await asAccess.listFlowRuns().catch((e: TesseraError) => e);
    expect((err as TesseraError).code).toBe('ERR_TYP_MISMATCH');
    expect((err as TesseraError).status).toBe(401);
    expect((err as TesseraError).message).toContain('not an API access token');

    // The other way round: a relying party of run tokens refuses an access token.
    const access = (await exchange(await ghToken())).body.access_token as string;
    const verifier = createVerifier({ issuer: server.issuer, audience: `${server.issuer}/api` });
    expect(await code(verifier.verify(access))).toBe('ERR_TYP_MISMATCH');
    const introspected = await fetch(`${server.url}/api/identity/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: access }),
    });
    expect(await introspected.json()).toEqual({ active: false });
  });

  it('never exchanges a token of its own, even under a trust policy naming its issuer', async () => {
    await admin.request('PUT', '/api/trust-policies/self', {
      body: { issuer: server.issuer, audience: `${server.issuer}/api`, subject: '*', role: 'admin' },
    });
    try {
      // The deployment of the test before, which allows the API's own audience.
      const issued = await apiAudienceToken((await admin.runDeployment('api-aud')).id);
      const r = await exchange(issued.token);
      expect(r.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_ISSUER_MISMATCH' });
      expect(r.body.error_description).toContain('issued by this server');
    } finally {
      await admin.request('DELETE', '/api/trust-policies/self');
    }
  });

  it('refuses access tokens granted by a policy once it changes or is deleted', async () => {
    await admin.request('PUT', '/api/trust-policies/temp', {
      body: { issuer: gh.issuer, audience: 'temp-aud', subject: 'repo:acme/*', role: 'viewer' },
    });
    const viewer = await clientFor(await gh.mint(githubActionsClaims({ repository: 'acme/tools', aud: 'temp-aud' })));
    await viewer.listFlowRuns();
    await admin.request('PUT', '/api/trust-policies/temp', {
      body: { issuer: gh.issuer, audience: 'temp-aud', subject: 'repo:acme/*', role: 'operator' },
    });
    const changed = await viewer.listFlowRuns().catch((e: TesseraError) => e);
    expect((changed as TesseraError).code).toBe('ERR_CREDENTIAL_REVOKED');
    expect((changed as TesseraError).message).toContain('trust policy "temp" changed since this access token was granted');
    const again = await clientFor(await gh.mint(githubActionsClaims({ repository: 'acme/tools', aud: 'temp-aud' })));
    await again.listFlowRuns();
    await admin.request('DELETE', '/api/trust-policies/temp');
    expect(await code(again.listFlowRuns())).toBe('ERR_CREDENTIAL_REVOKED');
  });

  it('validates trust policies, naming the field', async () => {
    const put = (body: Record<string, unknown>) => admin.request('PUT', '/api/trust-policies/bad', { body });
    const err = (await put({ issuer: gh.issuer, audience: 'a', role: 'developer' }).catch((e) => e)) as TesseraError;
    expect(err.code).toBe('ERR_VALIDATION');
    expect(err.message).toContain('subject: give a subject glob or a condition');
    const cel = (await put({ issuer: gh.issuer, audience: 'a', condition: 'claims.sub.matches(".*")', role: 'developer' }).catch(
      (e) => e,
    )) as TesseraError;
    expect(cel.message).toContain('condition:');
    expect(cel.message).toContain('glob');
    const http = (await put({ issuer: 'http://ci.example.com', audience: 'a', subject: 'x', role: 'viewer' }).catch(
      (e) => e,
    )) as TesseraError;
    expect(http.message).toContain('issuer: "http://ci.example.com" must be https');
  });

  it('records exchanges, denials and policy changes in the audit log, without tokens', async () => {
    const events = (
      await admin.request<{ items: { action: string; result: string; principal: string; detail: unknown }[] }>('GET', '/api/audit', {
        query: { limit: 1000 },
      })
    ).items;
    const actions = new Set(events.map((e) => `${e.action}:${e.result}`));
    for (const a of [
      'token.exchange:success',
      'token.exchange:denied',
      'trust_policy.created',
      'trust_policy.updated',
      'trust_policy.deleted',
      'authz.denied:denied',
    ]) {
      expect(
        [...actions].some((x) => x.startsWith(a)),
        a,
      ).toBe(true);
    }
    const denied = events.find(
      (e) => e.action === 'token.exchange' && e.result === 'denied' && JSON.stringify(e.detail).includes('feature-x'),
    );
    expect(denied?.principal).toBe(`external:${gh.issuer}#repo:${REPO}:ref:refs/heads/feature-x`);
    const text = JSON.stringify(events);
    expect(text).not.toMatch(JWT_RE);
    for (const s of secrets) expect(text).not.toContain(s);
  });

  it('never logs a token or secret', () => {
    const logs = server.logs.join('');
    expect(logs).not.toMatch(JWT_RE);
    for (const s of secrets) expect(logs).not.toContain(s);
  });
});
