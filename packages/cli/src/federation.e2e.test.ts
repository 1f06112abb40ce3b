/**
 * End-to-end: CI deploys with its platform token and no stored secret; a worker joins with a join
 * token and its own key pair, runs a flow, and stops once revoked. The built CLI runs in
 * subprocesses against a real server (no local admin) and a second local issuer standing in for
 * GitHub Actions. Needs the build: `npm run build`.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  type CreateJoinTokenResponse,
  createApiClient,
  type FlowRun,
  JWT_TOKEN_TYPE,
  type OAuthTokenResponse,
  TOKEN_EXCHANGE_GRANT,
  type WorkerIdentity,
} from '@tessera/core';
import {
  type BackgroundProcess,
  CLI_BIN,
  createTestProject,
  githubActionsClaims,
  runCli,
  startCli,
  startTestIssuer,
  startTestServer,
  type TestIssuer,
  type TestProject,
  type TestServer,
  waitFor,
} from '@tessera/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const AUD = 'tessera';
const JWT_RE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/;
const FLOW = `import { flow } from '@tessera/sdk';
export const hello = flow({ name: 'hello' }, async () => ({ greeting: 'hello' }));
`;
const YAML = `deployments:
  - name: hello
    entrypoint: flows/hello.ts:hello
    work_pool: default
    schedule: { cron: "0 3 * * *" }
`;

describe('machines and workers without stored secrets (CLI)', () => {
  let server: TestServer;
  let gh: TestIssuer;
  let project: TestProject;
  let worker: BackgroundProcess | undefined;
  const secrets: string[] = [];

  const exchange = async (repository: string) => {
    const subject = await gh.mint(githubActionsClaims({ repository, aud: AUD }));
    const res = await fetch(`${server.url}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE_GRANT, subject_token: subject, subject_token_type: JWT_TOKEN_TYPE }),
    });
    const body = (await res.json()) as OAuthTokenResponse;
    secrets.push(subject, body.access_token);
    return createApiClient({ baseUrl: server.url, token: body.access_token });
  };
  const tokenFile = async (repository: string, name: string) => {
    const t = await gh.mint(githubActionsClaims({ repository, aud: AUD }));
    secrets.push(t);
    return project.write(name, t);
  };

  beforeAll(async () => {
    if (!existsSync(CLI_BIN)) throw new Error(`${CLI_BIN} is missing: npm run build`);
    gh = await startTestIssuer();
    server = await startTestServer({
      auth: {
        localAdmin: false,
        trustPolicies: {
          admin: { issuer: gh.issuer, audience: AUD, subject: 'repo:acme/platform:ref:refs/heads/main', role: 'admin' },
          'etl-ci': { issuer: gh.issuer, audience: AUD, subject: 'repo:acme/etl:ref:refs/heads/main', role: 'developer' },
        },
      },
    });
    project = createTestProject({ 'flows/hello.ts': FLOW, 'tessera.yaml': YAML });
    await (await exchange('acme/platform')).createWorkPool({ name: 'default' });
  });
  afterAll(async () => {
    await worker?.kill('SIGKILL');
    await server?.close();
    await gh?.close();
    project?.remove();
  });

  it('deploys from CI with --token-file, and refuses a token the policy does not match, naming its sub', async () => {
    const env = { TESSERA_API_URL: server.url, TESSERA_HOME: project.dir };
    const ok = await runCli(['deploy', '--token-file', await tokenFile('acme/etl', 'ci-token')], { cwd: project.dir, env });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain('authenticated as machine repo:acme/etl:ref:refs/heads/main (developer)');
    expect(ok.stdout).toContain('deployed 1 of 1 deployment');

    const denied = await runCli(['deploy'], {
      cwd: project.dir,
      env: { ...env, TESSERA_FEDERATED_TOKEN_FILE: await tokenFile('mallory/etl', 'evil-token') },
    });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('ERR_POLICY_DENIED');
    expect(denied.stderr).toContain('accepts this token (sub "repo:mallory/etl:ref:refs/heads/main")');
    expect(denied.stderr).not.toContain('repo:acme/etl');

    // Any command honours TESSERA_FEDERATED_TOKEN_FILE; the schedule records the machine that created it.
    const listed = await runCli(['federation', 'ls', '--json'], {
      env: { ...env, TESSERA_FEDERATED_TOKEN_FILE: await tokenFile('acme/platform', 'admin-token') },
    });
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { name: string }[]).map((p) => p.name)).toEqual(['admin', 'etl-ci']);
    const dep = await (await exchange('acme/etl')).getDeployment('hello');
    expect(dep.schedules[0]?.createdBy).toMatchObject({ kind: 'machine', label: 'repo:acme/etl:ref:refs/heads/main' });
  });

  it('runs a worker that joined with a single-use join token, and stops it once revoked', async () => {
    const admin = await exchange('acme/platform');
    const jt = await admin.request<CreateJoinTokenResponse>('POST', '/api/workers/join-tokens', { body: { pool: 'default' } });
    secrets.push(jt.token);
    const identityFile = join(project.dir, 'worker.json');
    worker = startCli(['worker', 'start', '--pool', 'default', '--name', 'ci-w1', '--identity-file', identityFile], {
      cwd: project.dir,
      env: { TESSERA_API_URL: server.url, TESSERA_HOME: project.dir, TESSERA_JOIN_TOKEN: jt.token },
    });
    await waitFor(() => worker?.output().includes('joined as wk_'), { timeoutMs: 30_000 });
    expect(statSync(identityFile).mode & 0o777).toBe(0o600);

    const ci = await exchange('acme/etl');
    const run = await ci.runDeployment('hello');
    expect(run.triggeredBy).toMatchObject({ kind: 'machine', label: 'repo:acme/etl:ref:refs/heads/main' });
    let done: FlowRun | undefined;
    await waitFor(
      async () => {
        done = await ci.getFlowRun(run.id);
        return done.state.type === 'COMPLETED';
      },
      { timeoutMs: 60_000 },
    );

    const { items } = await admin.request<{ items: WorkerIdentity[] }>('GET', '/api/workers/identities');
    const me = items.find((w) => w.name === 'ci-w1');
    expect(me).toMatchObject({ method: 'join-token', pool: 'default', revokedAt: null });
    await admin.request('POST', `/api/workers/identities/${me?.id}/revoke`);
    const code = await Promise.race([worker.exited, new Promise((r) => setTimeout(() => r('timeout'), 30_000))]);
    expect(code, worker.output()).not.toBe('timeout');
    expect(worker.output()).toContain('cannot authenticate');
    expect(worker.output()).toContain('was revoked at');

    // The join token was spent: a second worker cannot reuse it.
    const again = await runCli(['worker', 'start', '--pool', 'default'], {
      env: { TESSERA_API_URL: server.url, TESSERA_HOME: project.dir, TESSERA_JOIN_TOKEN: jt.token },
      timeoutMs: 30_000,
    });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('ERR_JOIN_TOKEN_USED');
    expect(again.stderr).toContain('already used');
  });

  it('never prints a token or secret in server logs or worker output', () => {
    const all = server.logs.join('') + (worker?.output() ?? '');
    expect(all).not.toMatch(JWT_RE);
    for (const s of secrets) expect(all).not.toContain(s);
  });
});
