/**
 * Run identity, issue #3: every claim and `sub` template rule, the token request rules, introspection
 * bound to the run's life, revocation, DPoP binding, and that no token or credential leaks.
 */
import { createHash, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { DeploymentSpec, IntrospectionResponse } from '@tessera/core';
import { generateSigningKey, mintRunToken } from '@tessera/identity';
import {
  type ClaimedRun,
  claimRun,
  createFakeClock,
  failure,
  putTestDeployment,
  startTaskRun,
  startTestServer,
  type TestServer,
  textCells,
} from '@tessera/testing';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** Starts a run of `deployment` and claims it as worker `w-1`, like a worker does; the run is Running. */
async function startRun(server: TestServer, deployment: string, tags: string[] = []): Promise<ClaimedRun> {
  return claimRun(server, (await server.client.runDeployment(deployment, { tags })).id);
}

function deploy(server: TestServer, spec: Partial<DeploymentSpec> & { name: string }) {
  return putTestDeployment(server, { identity: { audiences: ['sts.amazonaws.com', 'vault.internal'] }, ...spec });
}

/** The documented plain-HTTP call: POST /api/identity/token with the run credential. */
function curlToken(
  server: TestServer,
  credential: string,
  body: string,
  contentType = 'application/json',
  extra: Record<string, string> = {},
) {
  return fetch(`${server.url}/api/identity/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${credential}`, 'content-type': contentType, ...extra },
    body,
  });
}

/** A POST through node:http, which (unlike fetch) sends the Host header it is given. */
function rawPost(
  server: TestServer,
  path: string,
  body: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, server.url), { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function introspect(server: TestServer, token: string, form = true): Promise<Response> {
  return fetch(`${server.url}/api/identity/introspect`, {
    method: 'POST',
    headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json' },
    body: form ? new URLSearchParams({ token }).toString() : JSON.stringify({ token }),
  });
}

async function active(server: TestServer, token: string): Promise<boolean> {
  const res = await introspect(server, token);
  expect(res.status).toBe(200);
  return ((await res.json()) as IntrospectionResponse).active;
}

let server: TestServer;
let verifyJwt: (token: string, audience: string) => Promise<JWTPayload>;

beforeAll(async () => {
  // Debug level: request lines and every refused request's message reach the log the no-leaks test scans.
  server = await startTestServer({ backgroundServices: false, logLevel: 'debug', settings: { tokenRateLimitPerMinute: 40 } });
  await server.client.createWorkPool({ name: 'default' });
  const jwks = createRemoteJWKSet(new URL(`${server.issuer}/.well-known/jwks.json`));
  verifyJwt = async (token, audience) => (await jwtVerify(token, jwks, { issuer: server.issuer, audience })).payload;
});
afterAll(async () => server.close());

describe('claims', () => {
  it('carries every documented claim, with the task and task run when asked from inside a task', async () => {
    const dep = await deploy(server, { name: 'claims-etl', project: 'data', tags: ['nightly'] });
    const { runId, as } = await startRun(server, 'claims-etl', ['adhoc-tag']);
    const taskRunId = await startTaskRun(as, runId, { key: 'load', name: 'load-1' });
    const issued = await as.issueIdentityToken({ audience: 'vault.internal', taskRunId, taskName: 'load' });
    const payload = await verifyJwt(issued.token, 'vault.internal');
    expect(payload).toEqual({
      iss: server.issuer,
      sub: 'ws:default:deployment:claims-etl:env:prod',
      aud: 'vault.internal',
      exp: expect.any(Number),
      iat: expect.any(Number),
      nbf: expect.any(Number),
      jti: issued.jti,
      workspace: 'default',
      project: 'data',
      flow: 'etl',
      deployment: 'claims-etl',
      deployment_id: dep.id,
      environment: 'prod',
      run_id: runId,
      run_attempt: 1,
      work_pool: 'default',
      worker: 'w-1',
      trigger_kind: 'manual',
      triggered_by: 'person:local admin',
      tags: ['nightly', 'adhoc-tag'],
      sub_template_version: 1,
      task: 'load',
      task_run_id: taskRunId,
    });
    const flowLevel = decodeJwt((await as.issueIdentityToken({ audience: 'vault.internal' })).token);
    expect(flowLevel.task).toBeUndefined();
    expect(flowLevel.task_run_id).toBeUndefined();
    expect(flowLevel.cnf).toBeUndefined();
    expect(flowLevel['https://aws.amazon.com/tags']).toBeUndefined();
  });

  it("refuses a task run id that belongs to another run's task", async () => {
    await deploy(server, { name: 'claims-other' });
    const a = await startRun(server, 'claims-other');
    const b = await startRun(server, 'claims-other');
    const taskRunId = await startTaskRun(a.as, a.runId, { key: 'load', name: 'load-1' });
    const e = await failure(b.as.issueIdentityToken({ audience: 'vault.internal', taskRunId, taskName: 'load' }));
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.message).toContain('belongs to another flow run');
  });

  it('adds the AWS session tags claim when identity.awsSessionTags is on, values sanitized to AWS’s charset', async () => {
    const dep = await deploy(server, {
      name: 'aws-tagged',
      flowName: 'ETL (daily) #1',
      identity: { audiences: ['sts.amazonaws.com'], awsSessionTags: true },
    });
    const { runId, as } = await startRun(server, 'aws-tagged');
    const payload = decodeJwt((await as.issueIdentityToken({ audience: 'sts.amazonaws.com' })).token);
    expect(payload['https://aws.amazon.com/tags']).toEqual({
      principal_tags: {
        workspace: ['default'],
        project: ['default'],
        flow: ['ETL _daily_ _1'],
        deployment: ['aws-tagged'],
        deployment_id: [dep.id],
        environment: ['prod'],
        work_pool: ['default'],
        run_id: [runId],
      },
      transitive_tag_keys: ['workspace', 'project', 'flow', 'deployment', 'deployment_id', 'environment'],
    });
    // The flow claim itself is not sanitized: only the AWS tag is.
    expect(payload.flow).toBe('ETL (daily) #1');
  });
});

describe('sub templates', () => {
  it('uses the deployment’s template, with its immutable id, and records the template version', async () => {
    const dep = await deploy(server, {
      name: 'immutable',
      identity: { audiences: ['vault.internal'], subTemplate: ['workspace', 'deployment_id', 'environment'] },
    });
    const { as } = await startRun(server, 'immutable');
    const issued = await as.issueIdentityToken({ audience: 'vault.internal' });
    expect(issued.sub).toBe(`ws:default:deployment_id:${dep.id}:env:prod`);
    const payload = decodeJwt(issued.token);
    expect(payload.sub).toBe(issued.sub);
    expect(payload.sub_template_version).toBe(1);
  });

  it("changes sub's shape when the deployment's template changes, keeping the id across the redeploy", async () => {
    const first = await deploy(server, { name: 'reshaped', identity: { audiences: ['vault.internal'], subTemplate: ['project', 'flow'] } });
    const a = await startRun(server, 'reshaped');
    expect((await a.as.issueIdentityToken({ audience: 'vault.internal' })).sub).toBe('project:default:flow:etl');
    const second = await deploy(server, {
      name: 'reshaped',
      identity: { audiences: ['vault.internal'], subTemplate: ['deployment', 'work_pool'] },
    });
    expect(second.id).toBe(first.id);
    const b = await startRun(server, 'reshaped');
    const t = await b.as.issueIdentityToken({ audience: 'vault.internal' });
    expect(t.sub).toBe('deployment:reshaped:pool:default');
    expect(decodeJwt(t.token).sub_template_version).toBe(1);
  });

  it('escapes adversarial values so no name can forge a separator', async () => {
    await deploy(server, {
      name: 'adversarial',
      flowName: 'etl:env:prod%3A é',
      environment: 'dev',
      identity: { audiences: ['vault.internal'], subTemplate: ['flow', 'environment'] },
    });
    const { as } = await startRun(server, 'adversarial');
    const { sub } = await as.issueIdentityToken({ audience: 'vault.internal' });
    expect(sub).toBe('flow:etl%3Aenv%3Aprod%253A%20%C3%A9:env:dev');
    expect(sub.split(':')).toHaveLength(4);
  });

  it('refuses at deploy time a template whose sub would exceed 127 characters, naming the field and the length', async () => {
    const spec = {
      name: `long-${'x'.repeat(60)}`,
      flowName: 'f'.repeat(40),
      identity: { audiences: ['vault.internal'], subTemplate: ['workspace', 'flow', 'deployment', 'deployment_id'] as const },
    };
    const e = await failure(deploy(server, { ...spec, identity: { ...spec.identity, subTemplate: [...spec.identity.subTemplate] } }));
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.status).toBe(400);
    // ws:default (10) + :flow:<40> (46) + :deployment:<65> (77) + :deployment_id:<36> (51)
    expect(e.details).toEqual({ field: 'identity.subTemplate', length: 184, limit: 127 });
    expect(e.message).toMatch(/^identity\.subTemplate: the token subject would be 184 characters .*the limit is 127/);
    expect((await failure(server.client.getDeployment(spec.name))).code).toBe('ERR_UNKNOWN_DEPLOYMENT');
  });

  it('refuses at deploy time a name too long for the default template, and says how to override it', async () => {
    const name = `n${'x'.repeat(98)}`;
    const e = await failure(deploy(server, { name }));
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.details).toMatchObject({ field: 'identity.subTemplate', length: 22 + 99 + 9 });
    expect(e.message).toContain(`The template is the default; set identity.subTemplate on deployment "${name}" to a shorter one.`);
    // The same deployment deploys once it names a template that fits.
    await expect(
      deploy(server, { name, identity: { audiences: ['vault.internal'], subTemplate: ['deployment_id'] } }),
    ).resolves.toMatchObject({
      name,
    });
  });

  it('refuses a template naming a key twice', async () => {
    const e = await failure(
      deploy(server, { name: 'twice', identity: { audiences: ['vault.internal'], subTemplate: ['deployment', 'deployment'] } }),
    );
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.details).toEqual({ field: 'identity.subTemplate[1]' });
  });
});

describe('workspace sub template', () => {
  it('is the default until set; then applies to every deployment without its own; null resets it', async () => {
    expect(await server.client.getWorkspaceIdentity()).toEqual({
      workspace: 'default',
      subTemplate: ['workspace', 'deployment', 'environment'],
      subTemplateVersion: 1,
      isDefault: true,
      example: 'ws:default:deployment:nightly-etl:env:prod',
      updatedAt: null,
    });
    await deploy(server, { name: 'ws-follower', project: 'data' });
    await deploy(server, { name: 'ws-own', identity: { audiences: ['vault.internal'], subTemplate: ['deployment'] } });
    try {
      const set = await server.client.putWorkspaceIdentity({ subTemplate: ['workspace', 'project', 'deployment_id'] });
      expect(set).toMatchObject({ isDefault: false, subTemplate: ['workspace', 'project', 'deployment_id'] });
      expect(set.example).toMatch(/^ws:default:project:default:deployment_id:[0-9a-f-]{36}$/);
      const follower = await server.client.getDeployment('ws-follower');
      const a = await startRun(server, 'ws-follower');
      expect((await a.as.issueIdentityToken({ audience: 'vault.internal' })).sub).toBe(
        `ws:default:project:data:deployment_id:${follower.id}`,
      );
      const b = await startRun(server, 'ws-own');
      expect((await b.as.issueIdentityToken({ audience: 'vault.internal' })).sub).toBe('deployment:ws-own');
    } finally {
      const reset = await server.client.putWorkspaceIdentity({ subTemplate: null });
      expect(reset).toMatchObject({ isDefault: true, subTemplate: ['workspace', 'deployment', 'environment'] });
    }
    const c = await startRun(server, 'ws-follower');
    expect((await c.as.issueIdentityToken({ audience: 'vault.internal' })).sub).toBe('ws:default:deployment:ws-follower:env:prod');
  });

  it('refuses a workspace template that would push a following deployment past 127 characters, naming it', async () => {
    const name = `w${'x'.repeat(89)}`; // default sub: 22 + 90 + 9 = 121 characters
    await deploy(server, { name });
    const e = await failure(server.client.putWorkspaceIdentity({ subTemplate: ['workspace', 'project', 'deployment', 'environment'] }));
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.details).toMatchObject({ field: 'subTemplate', deployments: 1 });
    expect(e.message).toContain(`"${name}" (137 characters)`);
    expect((await server.client.getWorkspaceIdentity()).isDefault).toBe(true);
    await server.client.deleteDeployment(name);
  });

  it('answers 404 for another workspace and refuses unknown or repeated keys', async () => {
    expect((await failure(server.client.getWorkspaceIdentity('other'))).code).toBe('ERR_NOT_FOUND');
    const unknown = await failure(server.client.putWorkspaceIdentity({ subTemplate: ['branch' as never] }));
    expect(unknown.code).toBe('ERR_VALIDATION');
    const twice = await failure(server.client.putWorkspaceIdentity({ subTemplate: ['flow', 'flow'] }));
    expect(twice.code).toBe('ERR_VALIDATION');
    expect(twice.details).toEqual({ field: 'subTemplate[1]' });
  });

  it('is only for people: a run credential cannot change it', async () => {
    await deploy(server, { name: 'ws-run' });
    const { as } = await startRun(server, 'ws-run');
    expect((await failure(as.putWorkspaceIdentity({ subTemplate: ['flow'] }))).code).toBe('ERR_FORBIDDEN');
  });
});

describe('token requests', () => {
  let run: ClaimedRun;
  beforeAll(async () => {
    await deploy(server, { name: 'requests' });
    run = await startRun(server, 'requests');
  });

  it('requires an audience: missing, empty or blank answers 400 ERR_AUDIENCE_REQUIRED', async () => {
    for (const body of ['{}', '{"audience":""}', '{"audience":"   "}']) {
      const res = await curlToken(server, run.credential, body);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ code: 'ERR_AUDIENCE_REQUIRED', message: expect.stringContaining('audience: required') });
    }
  });

  it('puts exactly one audience in each token, as a string, and refuses a list', async () => {
    const payload = decodeJwt((await run.as.issueIdentityToken({ audience: 'sts.amazonaws.com' })).token);
    expect(payload.aud).toBe('sts.amazonaws.com');
    const res = await curlToken(server, run.credential, JSON.stringify({ audience: ['sts.amazonaws.com', 'vault.internal'] }));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe('ERR_VALIDATION');
  });

  it("checks the audience against the deployment's allowlist", async () => {
    const e = await failure(run.as.issueIdentityToken({ audience: 'https://evil.example.com' }));
    expect(e.code).toBe('ERR_AUDIENCE_NOT_ALLOWED');
    expect(e.status).toBe(403);
    expect(e.message).toContain('allowed: sts.amazonaws.com, vault.internal');
  });

  it("lives 5 minutes by default, up to the deployment's maximum (1 h when unset), never under 60 s", async () => {
    const short = decodeJwt((await run.as.issueIdentityToken({ audience: 'vault.internal' })).token);
    expect((short.exp as number) - (short.iat as number)).toBe(300);
    const hour = decodeJwt((await run.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '60m' })).token);
    expect((hour.exp as number) - (hour.iat as number)).toBe(3600);
    const over = await failure(run.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '61m' }));
    expect(over.code).toBe('ERR_VALIDATION');
    expect(over.message).toContain('3660 s is outside what deployment "requests" allows');
    expect(over.details).toEqual({ field: 'lifetime' });
    expect((await failure(run.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30s' }))).code).toBe('ERR_VALIDATION');
  });

  it("is capped by the deployment's own maximum", async () => {
    await deploy(server, { name: 'capped', identity: { audiences: ['vault.internal'], maxLifetimeMs: 10 * 60_000 } });
    const capped = await startRun(server, 'capped');
    expect((await capped.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '10m' })).expiresAt).toBeTruthy();
    const e = await failure(capped.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '11m' }));
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.message).toContain('(60 s to 600 s)');
  });

  it('backdates nbf by 30 s and gives every token a unique jti', async () => {
    const jtis = new Set<string>();
    for (let i = 0; i < 10; i++) {
      const { token, jti } = await run.as.issueIdentityToken({ audience: 'vault.internal' });
      const p = decodeJwt(token);
      expect(p.nbf).toBe((p.iat as number) - 30);
      expect(p.jti).toBe(jti);
      expect(jti).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      jtis.add(jti);
    }
    expect(jtis.size).toBe(10);
  });

  it('works with the plain HTTP call the docs show (curl with the run credential), JSON or form body', async () => {
    // curl -s -X POST "$TESSERA_API_URL/api/identity/token" -H "authorization: Bearer $TESSERA_RUN_CREDENTIAL" \
    //   -H 'content-type: application/json' -d '{"audience":"sts.amazonaws.com"}' | jq -r .token
    const res = await curlToken(server, run.credential, '{"audience":"sts.amazonaws.com"}');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; expiresAt: string; sub: string };
    expect(await verifyJwt(body.token, 'sts.amazonaws.com')).toMatchObject({ run_id: run.runId, sub: body.sub });
    const form = await curlToken(server, run.credential, 'audience=vault.internal&lifetime=10m', 'application/x-www-form-urlencoded');
    expect(form.status).toBe(200);
    const p = decodeJwt(((await form.json()) as { token: string }).token);
    expect(p).toMatchObject({ aud: 'vault.internal' });
    expect((p.exp as number) - (p.iat as number)).toBe(600);
  });

  it('lets no cache store a token or a credential (Cache-Control: no-store), while discovery and the JWKS stay cacheable', async () => {
    const issued = await curlToken(server, run.credential, '{"audience":"sts.amazonaws.com"}');
    expect(issued.status).toBe(200);
    expect(issued.headers.get('cache-control')).toBe('no-store');
    const refused = await curlToken(server, run.credential, '{"audience":"nope.example"}');
    expect(refused.status).toBe(403);
    expect(refused.headers.get('cache-control')).toBe('no-store');
    const poll = await fetch(`${server.url}/api/work-pools/default/workers/poll`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ workerId: randomUUID(), workerName: 'w', capacity: 0, running: [], waitMs: 0 }),
    });
    expect(poll.status).toBe(200);
    expect(poll.headers.get('cache-control')).toBe('no-store');
    expect((await fetch(`${server.url}/oauth/token`, { method: 'POST' })).headers.get('cache-control')).toBe('no-store');
    for (const path of ['/.well-known/openid-configuration', '/.well-known/jwks.json']) {
      expect((await fetch(`${server.url}${path}`)).headers.get('cache-control')).toBe('public, max-age=300');
    }
  });

  it('answers 429 ERR_RATE_LIMITED with Retry-After once a run asks too often', async () => {
    await deploy(server, { name: 'chatty' });
    const chatty = await startRun(server, 'chatty');
    let limited: Response | undefined;
    for (let i = 0; i < 45 && !limited; i++) {
      const res = await curlToken(server, chatty.credential, '{"audience":"vault.internal"}');
      if (res.status === 429) limited = res;
      else expect(res.status).toBe(200);
    }
    expect(limited).toBeDefined();
    const body = (await limited?.json()) as { code: string; message: string; details: { retryAfterSeconds: number } };
    expect(body.code).toBe('ERR_RATE_LIMITED');
    expect(body.message).toMatch(/^this run asked for more than 40 identity tokens in a minute; reuse a token/);
    expect(Number(limited?.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(body.details.retryAfterSeconds).toBe(Number(limited?.headers.get('retry-after')));
    // Other runs are not affected.
    expect((await curlToken(server, run.credential, '{"audience":"vault.internal"}')).status).toBe(200);
  });
});

describe('introspection (RFC 7662)', () => {
  it('answers active with every claim for a valid token of a live run, to a form or a JSON body', async () => {
    await deploy(server, { name: 'introspected' });
    const { as } = await startRun(server, 'introspected');
    const { token } = await as.issueIdentityToken({ audience: 'vault.internal' });
    const res = await introspect(server, token);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toEqual({ active: true, token_type: 'Bearer', ...decodeJwt(token) });
    expect(await (await introspect(server, token, false)).json()).toEqual(body);
    expect(await server.client.introspectToken(token)).toEqual(body);
  });

  it('answers { active: false } for garbage, a tampered token, an unknown key and another issuer', async () => {
    await deploy(server, { name: 'forged' });
    const { as } = await startRun(server, 'forged');
    const { token } = await as.issueIdentityToken({ audience: 'vault.internal' });
    const [h, p, sig] = token.split('.') as [string, string, string];
    const claims = decodeJwt(token);
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, deployment: 'prod-admin' })).toString('base64url')}.${sig}`;
    const rogue = await generateSigningKey('RS256');
    const mintWith = (key: typeof rogue, issuer: string) =>
      mintRunToken({
        key,
        issuer,
        audience: 'vault.internal',
        subject: claims.sub as string,
        lifetimeSeconds: 300,
        claims: claims as never,
      });
    const unknownKid = (await mintWith(rogue, server.issuer)).token;
    const sameKidWrongKey = (await mintWith({ ...rogue, kid: decodeProtectedHeader(token).kid as string }, server.issuer)).token;
    const otherIssuer = (await mintWith(server.services.keys.signingKey('RS256'), 'https://evil.example.com')).token;
    for (const t of ['not-a-token', `${h}.${p}.`, tampered, unknownKid, sameKidWrongKey, otherIssuer]) {
      const res = await introspect(server, t);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ active: false });
    }
    expect(await active(server, token)).toBe(true);
  });

  it('answers inactive once the run ends, long before exp', async () => {
    await deploy(server, { name: 'ending' });
    const { runId, as } = await startRun(server, 'ending');
    const { token } = await as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30m' });
    expect(await active(server, token)).toBe(true);
    await as.proposeState(runId, { state: { type: 'COMPLETED' }, result: null });
    expect(await active(server, token)).toBe(false);
    // And the run's credential no longer gets tokens.
    expect((await failure(as.issueIdentityToken({ audience: 'vault.internal' }))).code).toBe('ERR_CREDENTIAL_REVOKED');
  });

  it("answers inactive for an attempt that failed, while the retry's own tokens are active", async () => {
    await deploy(server, { name: 'retried', retries: 1 });
    const first = await startRun(server, 'retried');
    const { token: old } = await first.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30m' });
    const failed = await first.as.proposeState(first.runId, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'boom' } });
    expect(failed.retryScheduled).toBe(true);
    expect(await active(server, old)).toBe(false);
    const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w-2', capacity: 1, running: [], waitMs: 0 });
    const second = server.client.withToken(poll.runs.find((r) => r.run.id === first.runId)?.credential);
    await second.proposeState(first.runId, { state: { type: 'RUNNING' } });
    const { token: fresh } = await second.issueIdentityToken({ audience: 'vault.internal' });
    expect(decodeJwt(fresh)).toMatchObject({ run_attempt: 2, worker: 'w-2' });
    expect(await active(server, fresh)).toBe(true);
    expect(await active(server, old)).toBe(false);
  });

  it('keeps a claim’s tokens inactive once it is given back, even when the next claim gets the same attempt number', async () => {
    await deploy(server, { name: 'given-back' });
    const run = await server.client.runDeployment('given-back');
    const claim = async (workerName: string) => {
      const poll = await server.client.poll('default', { workerId: randomUUID(), workerName, capacity: 1, running: [], waitMs: 0 });
      const c = poll.runs.find((r) => r.run.id === run.id);
      expect(c, 'claimed').toBeDefined();
      return { attempt: c?.run.attempt, as: server.client.withToken(c?.credential) };
    };
    const a = await claim('w-a');
    const { token } = await a.as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30m' });
    expect(await active(server, token)).toBe(true);
    await a.as.proposeState(run.id, { state: { type: 'SCHEDULED' } });
    expect(await active(server, token)).toBe(false);
    const b = await claim('w-b');
    expect(b.attempt).toBe(a.attempt);
    await b.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    expect(await active(server, token)).toBe(false);
    expect(await active(server, (await b.as.issueIdentityToken({ audience: 'vault.internal' })).token)).toBe(true);
  });

  it('takes at most 64 KiB from a caller without a credential (413), as from every anonymous caller', async () => {
    // Not in local mode, where a request without a credential is the local admin.
    const s = await startTestServer({ backgroundServices: false, auth: { localAdmin: false } });
    try {
      const big = `token=${'a'.repeat(70 * 1024)}`;
      const form = { 'content-type': 'application/x-www-form-urlencoded' };
      const res = await fetch(`${s.url}/api/identity/introspect`, { method: 'POST', headers: form, body: big });
      expect(res.status).toBe(413);
      expect(await res.json()).toMatchObject({ code: 'ERR_VALIDATION', message: expect.stringMatching(/at most 64 KiB/) });
      expect((await fetch(`${s.url}/oauth/token`, { method: 'POST', headers: form, body: big })).status).toBe(413);
      // A credential that is refused (expired, revoked) gets its own answer, 401: the client refreshes.
      const refused = await fetch(`${s.url}/api/logs`, {
        method: 'POST',
        headers: { ...form, authorization: 'Bearer tsr_not-a-real-credential-000000' },
        body: big,
      });
      expect(refused.status).toBe(401);
      // Sent in chunks, with no length up front: the bytes read are counted.
      const chunked = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(new URL('/api/identity/introspect', s.url), { method: 'POST', headers: form }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        for (let i = 0; i < 70; i++) req.write(i === 0 ? `token=${'a'.repeat(1018)}` : 'a'.repeat(1024));
        req.end();
      });
      expect(chunked).toBe(413);
      // A small one is answered as usual.
      expect((await fetch(`${s.url}/api/identity/introspect`, { method: 'POST', headers: form, body: 'token=abc' })).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('answers 400 invalid_request (RFC 6749 form) without a token, or with two', async () => {
    for (const body of ['', 'token_type_hint=access_token', 'token=a&token=b']) {
      const res = await fetch(`${server.url}/api/identity/introspect`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body,
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        error: 'invalid_request',
        error_description: expect.stringMatching(/^token: /),
        code: 'ERR_VALIDATION',
      });
    }
  });
});

describe('introspection and time', () => {
  it('answers inactive once the token expires', async () => {
    const clock = createFakeClock(new Date());
    const timed = await startTestServer({ backgroundServices: false, clock });
    try {
      await timed.client.createWorkPool({ name: 'default' });
      await deploy(timed, { name: 'timed' });
      const { as } = await startRun(timed, 'timed');
      const { token } = await as.issueIdentityToken({ audience: 'vault.internal' });
      expect(await active(timed, token)).toBe(true);
      clock.advance(299_000);
      expect(await active(timed, token)).toBe(true);
      clock.advance(2_000);
      expect(await active(timed, token)).toBe(false);
    } finally {
      await timed.close();
    }
  });
});

describe('revoking a run’s identity', () => {
  it('turns its tokens inactive before exp and refuses new ones with ERR_IDENTITY_REVOKED, while the run goes on', async () => {
    await deploy(server, { name: 'revoked' });
    const { runId, as } = await startRun(server, 'revoked');
    const tokens = [
      (await as.issueIdentityToken({ audience: 'vault.internal', lifetime: '30m' })).token,
      (await as.issueIdentityToken({ audience: 'sts.amazonaws.com' })).token,
    ];
    for (const t of tokens) expect(await active(server, t)).toBe(true);
    const result = await server.client.revokeRunIdentity(runId.slice(0, 8), { reason: 'token pasted in a ticket' });
    expect(result).toEqual({
      runId,
      revokedAt: expect.any(String),
      revokedBy: 'person:local admin',
      tokensRevoked: 2,
      alreadyRevoked: false,
    });
    for (const t of tokens) expect(await active(server, t)).toBe(false);
    const e = await failure(as.issueIdentityToken({ audience: 'vault.internal' }));
    expect(e.code).toBe('ERR_IDENTITY_REVOKED');
    expect(e.status).toBe(403);
    expect(e.message).toMatch(new RegExp(`^the identity of run ${runId} was revoked at .*: it gets no more identity tokens`));
    const again = await server.client.revokeRunIdentity(runId);
    expect(again).toMatchObject({ alreadyRevoked: true, tokensRevoked: 0, revokedAt: result.revokedAt });
    const rows = await server.services.ctx.db.selectFrom('issued_tokens').select('revoked_at').where('flow_run_id', '=', runId).execute();
    expect(rows.every((r) => r.revoked_at === result.revokedAt)).toBe(true);
    // The run itself is not stopped: it still reports its state.
    expect((await as.proposeState(runId, { state: { type: 'COMPLETED' }, result: null })).status).toBe('ACCEPT');
  });

  it('is for people only, and answers 404 for an unknown run', async () => {
    await deploy(server, { name: 'self-revoke' });
    const { runId, as } = await startRun(server, 'self-revoke');
    expect((await failure(as.revokeRunIdentity(runId))).code).toBe('ERR_FORBIDDEN');
    expect((await failure(server.client.revokeRunIdentity(randomUUID()))).code).toBe('ERR_RUN_NOT_FOUND');
  });
});

describe('DPoP-bound tokens (RFC 9449)', () => {
  let run: ClaimedRun;
  let key: { privateKey: CryptoKey; publicJwk: JWK; jkt: string };
  const endpoint = () => `${server.url}/api/identity/token`;

  beforeAll(async () => {
    await deploy(server, { name: 'bound' });
    run = await startRun(server, 'bound');
    const pair = await generateKeyPair('ES256', { extractable: false });
    const publicJwk = await exportJWK(pair.publicKey);
    key = { privateKey: pair.privateKey as CryptoKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };
  });

  function proof(o: { header?: Record<string, unknown>; payload?: Record<string, unknown> } = {}): Promise<string> {
    return new SignJWT({ htm: 'POST', htu: endpoint(), jti: randomUUID(), iat: Math.floor(Date.now() / 1000), ...o.payload })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk, ...o.header } as never)
      .sign(key.privateKey);
  }

  it('binds the token to the proof’s key: cnf.jkt in the token, the response and introspection', async () => {
    const issued = await run.as.issueDpopIdentityToken({ audience: 'vault.internal' }, await proof());
    expect(issued.cnf).toEqual({ jkt: key.jkt });
    const payload = await verifyJwt(issued.token, 'vault.internal');
    expect(payload.cnf).toEqual({ jkt: key.jkt });
    const intro = await server.client.introspectToken(issued.token);
    expect(intro).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: key.jkt } });
    const row = await server.services.ctx.db.selectFrom('issued_tokens').select('cnf_jkt').where('jti', '=', issued.jti).executeTakeFirst();
    expect(row?.cnf_jkt).toBe(key.jkt);
  });

  it.each([
    ['typ', { header: { typ: 'JWT' } }],
    ['htm', { payload: { htm: 'GET' } }],
    ['htu', { payload: { htu: 'http://127.0.0.1:1/api/identity/token' } }],
    ['iat', { payload: { iat: Math.floor(Date.now() / 1000) - 300 } }],
    ['jti', { payload: { jti: undefined } }],
  ])('refuses a proof with a wrong %s: 400 ERR_DPOP_PROOF_INVALID', async (reason, o) => {
    const res = await curlToken(server, run.credential, '{"audience":"vault.internal"}', 'application/json', { dpop: await proof(o) });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'ERR_DPOP_PROOF_INVALID', details: { field: 'DPoP', reason } });
  });

  it("judges htu by the server's own URLs, never by the request's Host header", async () => {
    // A proof made for another server's token endpoint, sent here with that server's name as Host.
    const forged = await proof({ payload: { htu: 'http://tessera.evil.example/api/identity/token' } });
    const res = await rawPost(server, '/api/identity/token', '{"audience":"vault.internal"}', {
      host: 'tessera.evil.example',
      authorization: `Bearer ${run.credential}`,
      'content-type': 'application/json',
      dpop: forged,
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'ERR_DPOP_PROOF_INVALID', details: { reason: 'htu' } });
    // The listen address as localhost (a loopback server) is this server.
    const port = new URL(server.url).port;
    const local = await proof({ payload: { htu: `http://localhost:${port}/api/identity/token` } });
    expect((await run.as.issueDpopIdentityToken({ audience: 'vault.internal' }, local)).cnf).toEqual({ jkt: key.jkt });
  });

  it('refuses a proof carrying its private key, a garbled proof, and a replayed proof', async () => {
    const extractable = await generateKeyPair('ES256', { extractable: true });
    const privateJwk = await exportJWK(extractable.privateKey);
    const leaky = await new SignJWT({ htm: 'POST', htu: endpoint(), jti: randomUUID() })
      .setIssuedAt()
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: privateJwk })
      .sign(extractable.privateKey);
    const p = await proof();
    const cases: [string, string][] = [
      [leaky, 'jwk'],
      ['garbage', 'malformed'],
    ];
    for (const [dpop, reason] of cases) {
      const e = await failure(run.as.issueDpopIdentityToken({ audience: 'vault.internal' }, dpop));
      expect(e.code).toBe('ERR_DPOP_PROOF_INVALID');
      expect(e.details).toMatchObject({ reason });
    }
    await run.as.issueDpopIdentityToken({ audience: 'vault.internal' }, p);
    const replay = await failure(run.as.issueDpopIdentityToken({ audience: 'vault.internal' }, p));
    expect(replay.code).toBe('ERR_DPOP_PROOF_INVALID');
    expect(replay.details).toMatchObject({ reason: 'replay' });
    expect(replay.message).not.toContain(p);
  });
});

describe('no leaks', () => {
  const JWT = /eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\./;
  const CREDENTIAL = /tsr_[A-Za-z0-9_-]{16,}/;

  it('keeps tokens and credentials out of error messages', async () => {
    await deploy(server, { name: 'leaky' });
    const { runId, credential, as } = await startRun(server, 'leaky');
    const { token } = await as.issueIdentityToken({ audience: 'vault.internal' });
    const bodies: string[] = [];
    // A token pasted as the audience by mistake (a short one: real RS256 tokens exceed the field's 1000 characters).
    const pasted = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZw';
    bodies.push(await (await curlToken(server, credential, JSON.stringify({ audience: pasted }))).text());
    // … as the lifetime (a duration error quotes no value), as a field name (unknown keys are named), and
    // as a run id in a URL (404s name the id).
    const asLifetime = await curlToken(server, credential, JSON.stringify({ audience: 'vault.internal', lifetime: pasted }));
    expect(((await asLifetime.clone().json()) as { code: string; details: unknown }).details).toEqual({ field: 'lifetime' });
    bodies.push(await asLifetime.text());
    bodies.push(await (await curlToken(server, credential, JSON.stringify({ audience: 'vault.internal', [pasted]: 1 }))).text());
    bodies.push(await (await fetch(`${server.url}/api/flow-runs/${pasted}`)).text());
    bodies.push(await (await fetch(`${server.url}/no/such/${pasted}`)).text());

    // An unknown credential, a malformed header, a JWT where a credential is expected.
    const bogus = `tsr_${randomUUID().replaceAll('-', '')}`;
    for (const auth of [`Bearer ${bogus}`, `Basic ${credential}`, `Bearer ${token}`]) {
      bodies.push(await (await fetch(`${server.url}/api/flow-runs/${runId}`, { headers: { authorization: auth } })).text());
    }
    // A client that is not the SDK (which masks first) sends the token and credential in a task's failure
    // and in log lines: the server masks them before storing (the next test scans every table).
    const taskRunId = randomUUID();
    const leak = `got ${token} with ${credential}`;
    await as.sendTaskRunEvents([
      {
        taskRunId,
        flowRunId: runId,
        taskKey: 'leak',
        name: 'leak',
        state: { type: 'FAILED', message: leak },
        attempt: 1,
        maxRetries: 0,
        timestamp: new Date().toISOString(),
        error: { name: 'Error', message: leak, stack: `Error: ${leak}\n    at x` },
      },
    ]);
    await as.sendLogs([{ flowRunId: runId, taskRunId, level: 'info', message: leak, timestamp: new Date().toISOString() }]);
    const task = (await server.client.listTaskRuns(runId)).items.find((t) => t.id === taskRunId);
    expect(JSON.stringify(task)).toContain('[redacted JWT');
    expect(JSON.stringify(task)).toContain('[redacted credential');
    // A credential whose run ended.
    await as.proposeState(runId, { state: { type: 'COMPLETED' }, result: null });
    bodies.push(await (await curlToken(server, credential, '{"audience":"vault.internal"}')).text());
    bodies.push(await (await introspect(server, token)).text());
    for (const b of bodies) {
      expect(b).not.toMatch(JWT);
      expect(b).not.toMatch(CREDENTIAL);
      expect(b).not.toContain(bogus);
      expect(b).not.toContain(pasted);
    }
    expect(bodies[0]).toContain('[redacted JWT');
  });

  it('stores no token or credential in any text column of any table', async () => {
    const db = server.services.ctx.db;
    const issued = await db
      .selectFrom('issued_tokens')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(issued.n)).toBeGreaterThan(50);
    const tables = await db.introspection.getTables();
    expect(tables.map((t) => t.name)).toEqual(
      expect.arrayContaining(['issued_tokens', 'run_credentials', 'logs', 'flow_runs', 'dpop_proofs', 'identity_revocations']),
    );
    const cells = await textCells(server);
    for (const { table, column, value } of cells) {
      expect(value, `${table}.${column}`).not.toMatch(JWT);
      expect(value, `${table}.${column}`).not.toMatch(CREDENTIAL);
    }
    expect(cells.length).toBeGreaterThan(500);
    // Credentials are stored as SHA-256 hashes only.
    const hashes = await db.selectFrom('run_credentials').select('hash').execute();
    for (const { hash } of hashes) expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(createHash('sha256').update('x').digest('hex')).toHaveLength(64);
  });

  it('never writes a token or credential to the server log', () => {
    const joined = server.logs.join('\n');
    expect(joined).not.toMatch(JWT);
    expect(joined).not.toMatch(CREDENTIAL);
  });
});

describe('preview (tessera token explain --run)', () => {
  it('shows exactly the claims and header the token endpoint issues, without issuing or recording anything', async () => {
    const clock = createFakeClock('2026-11-29T08:00:00Z');
    const s = await startTestServer({ clock, backgroundServices: false });
    try {
      await s.client.createWorkPool({ name: 'default' });
      await deploy(s, {
        name: 'preview-etl',
        project: 'data',
        identity: {
          audiences: ['sts.amazonaws.com'],
          algorithm: 'ES256',
          awsSessionTags: true,
          subTemplate: ['workspace', 'deployment_id', 'environment'],
        },
      });
      const { runId, as } = await startRun(s, 'preview-etl', ['adhoc']);
      const metrics = async () =>
        (await (await fetch(`${s.url}/metrics`)).text()).match(/^tessera_identity_tokens_issued_total (\d+)$/m)?.[1];
      const before = await metrics();
      const preview = await s.client.previewIdentityToken(runId, { audience: 'sts.amazonaws.com', lifetime: '15m' });
      expect(await metrics()).toBe(before);
      const issued = await as.issueIdentityToken({ audience: 'sts.amazonaws.com', lifetime: '15m' });
      const { jti, ...claims } = decodeJwt(issued.token);
      expect({ ...preview.claims, jti: undefined }).toEqual({ ...claims, jti: undefined });
      expect(preview.claims.jti).toBe('(not issued)');
      expect(jti).toBe(issued.jti);
      expect(preview.header).toEqual(decodeProtectedHeader(issued.token));
      expect(preview).toMatchObject({ runState: 'RUNNING', audienceAllowed: true, allowedAudiences: ['sts.amazonaws.com'] });

      // An audience the deployment does not allow: shown, and said to be refused.
      const other = await s.client.previewIdentityToken(runId, { audience: 'vault.internal' });
      expect(other).toMatchObject({ audienceAllowed: false, claims: { aud: 'vault.internal' } });
      // The run's own refusals stand (revoked identity), and a viewer is enough; a run credential is not.
      expect((await failure(as.previewIdentityToken(runId, { audience: 'sts.amazonaws.com' }))).code).toBe('ERR_FORBIDDEN');
      await s.client.revokeRunIdentity(runId);
      expect((await failure(s.client.previewIdentityToken(runId, { audience: 'sts.amazonaws.com' }))).code).toBe('ERR_IDENTITY_REVOKED');
      expect((await failure(s.client.previewIdentityToken(randomUUID(), { audience: 'sts.amazonaws.com' }))).code).toBe(
        'ERR_RUN_NOT_FOUND',
      );
    } finally {
      await s.close();
    }
  });
});
