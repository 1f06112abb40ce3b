/**
 * Run identity end to end without a worker: a real server, and a real flow-run process started the
 * way a worker starts one (node + tsx, the run's environment). Runs from source, so no build needed.
 */
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type FlowRun, isTerminal, RUN_ENV } from '@tessera/core';
import {
  createTestProject,
  REPO_ROOT,
  runCli,
  startTestServer,
  type TestProject,
  type TestServer,
  textCells,
  waitFor,
} from '@tessera/testing';
import { calculateJwkThumbprint, compactVerify, decodeJwt, decodeProtectedHeader, importJWK, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const RUNNER = join(REPO_ROOT, 'packages/sdk/src/bin/run-flow.ts');

const FLOWS = `
import { writeFileSync } from 'node:fs';
import { flow, getLogger, identity } from '@tessera/sdk';
import { z } from 'zod';

export const bound = flow({ name: 'bound', parameters: z.object({ dir: z.string() }) }, async ({ dir }) => {
  const t = await identity.dpopToken({ audience: 'vault.internal' });
  const again = await identity.dpopToken({ audience: 'vault.internal' });
  const proof = await t.proof('GET', 'https://api.internal/things?page=2#top', { accessToken: t.token });
  getLogger().info('bound token ' + t.token + ' with proof ' + proof);
  const active = await fetch(process.env.TESSERA_API_URL + '/api/identity/introspect', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'token=' + encodeURIComponent(t.token),
  }).then((r) => r.json());
  writeFileSync(dir + '/bound.json', JSON.stringify({ token: t.token, jkt: t.jkt, againJkt: again.jkt, proof, active, members: Object.keys(t).sort() }));
  return { ok: true };
});
`;

let server: TestServer;
let project: TestProject;

beforeAll(async () => {
  project = createTestProject({ 'flows.ts': FLOWS });
  server = await startTestServer({ backgroundServices: false });
  await server.client.createWorkPool({ name: 'default' });
});
afterAll(async () => {
  await server?.close();
  project?.remove();
});

/** Claims the run like a worker and runs its process to the end. */
async function execute(runId: string, entrypoint: string): Promise<{ run: FlowRun; output: string }> {
  const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w-e2e', capacity: 1, running: [], waitMs: 0 });
  const claimed = poll.runs.find((r) => r.run.id === runId);
  if (!claimed) throw new Error(`run ${runId} was not claimed`);
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', RUNNER], {
    cwd: project.dir,
    env: {
      PATH: process.env.PATH,
      [RUN_ENV.apiUrl]: server.url,
      [RUN_ENV.runId]: runId,
      [RUN_ENV.attempt]: String(claimed.run.attempt),
      [RUN_ENV.credential]: claimed.credential,
      [RUN_ENV.entrypoint]: entrypoint,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => {
    output += d;
  });
  child.stderr.on('data', (d) => {
    output += d;
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  expect(code, output).toBe(0);
  const run = await waitFor(
    async () => {
      const r = await server.client.getFlowRun(runId);
      return isTerminal(r.state.type) ? r : undefined;
    },
    { timeoutMs: 20_000, what: `run ${runId} to finish` },
  );
  return { run, output };
}

describe('DPoP-bound tokens from flow code', () => {
  it('binds the token to a key made in the run process, whose proofs verify, and masks both in logs', async () => {
    const dir = join(project.dir, 'out');
    mkdirSync(dir, { recursive: true });
    await server.client.putDeployment({
      name: 'bound',
      flowName: 'bound',
      entrypoint: 'flows.ts:bound',
      path: project.dir,
      workPool: 'default',
      identity: { audiences: ['vault.internal'] },
    });
    const created = await server.client.runDeployment('bound', { parameters: { dir } });
    const { run, output } = await execute(created.id, 'flows.ts:bound');
    expect(run.state.type, JSON.stringify(run.error)).toBe('COMPLETED');
    const out = JSON.parse(readFileSync(join(dir, 'bound.json'), 'utf8')) as {
      token: string;
      jkt: string;
      againJkt: string;
      proof: string;
      active: Record<string, unknown>;
      members: string[];
    };
    // One key per process: both tokens name it.
    expect(out.againJkt).toBe(out.jkt);
    expect(out.members).toEqual(['aud', 'alg', 'expiresAt', 'jkt', 'jti', 'kid', 'proof', 'sub', 'token', 'tokenType'].sort());
    expect(decodeJwt(out.token).cnf).toEqual({ jkt: out.jkt });
    expect(out.active).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: out.jkt }, run_id: run.id });

    // The proof: typ dpop+jwt, ES256, a public jwk whose thumbprint is the token's jkt, htu without query or fragment, ath.
    const header = decodeProtectedHeader(out.proof);
    expect(header).toMatchObject({ typ: 'dpop+jwt', alg: 'ES256' });
    const jwk = header.jwk as JWK;
    expect(Object.keys(jwk).sort()).toEqual(['crv', 'kty', 'x', 'y']);
    expect(await calculateJwkThumbprint(jwk)).toBe(out.jkt);
    const { payload } = await compactVerify(out.proof, await importJWK(jwk, 'ES256'));
    const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    expect(claims).toMatchObject({
      htm: 'GET',
      htu: 'https://api.internal/things',
      ath: createHash('sha256').update(out.token).digest('base64url'),
      jti: expect.any(String),
      iat: expect.any(Number),
    });

    // Once the run ended, introspection says inactive.
    expect(await server.client.introspectToken(out.token)).toEqual({ active: false });

    // Logs: the token and the proof are masked, on the server and on the process's own output.
    const logs = (await server.client.getLogs(run.id)).items.map((l) => l.message).join('\n');
    expect(logs).toMatch(/bound token \[redacted JWT …[\w-]{4}\] with proof \[redacted JWT …[\w-]{4}\]/);
    expect(logs).not.toContain(out.token);
    expect(output).not.toContain(out.token);
    expect(output).not.toContain(out.proof);
  });

  it('`tessera runs revoke-identity` revokes a run’s identity, by id prefix, and says what it did', async () => {
    const [run] = (await server.client.listFlowRuns({ deployment: 'bound' })).items;
    if (!run) throw new Error('no run of "bound"');
    const env = { TESSERA_API_URL: server.url };
    const first = await runCli(['runs', 'revoke-identity', run.id.slice(0, 8), '--reason', 'e2e'], { env });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(
      /revoked the identity of bound run [0-9a-f]{8}.*: 2 unexpired tokens now inactive; new token requests answer ERR_IDENTITY_REVOKED/,
    );
    const again = await runCli(['runs', 'revoke-identity', run.id, '--json'], { env });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({
      runId: run.id,
      alreadyRevoked: true,
      tokensRevoked: 0,
      revokedBy: 'person:local admin',
    });
    const missing = await runCli(['runs', 'revoke-identity', 'ffffffff'], { env });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('ERR_RUN_NOT_FOUND');
  });

  it('leaves no token or credential in any text column of the database after the run', async () => {
    const db = server.services.ctx.db;
    const issued = await db.selectFrom('issued_tokens').select(['jti', 'cnf_jkt']).execute();
    expect(issued.length).toBeGreaterThanOrEqual(2);
    expect(issued.every((r) => r.cnf_jkt)).toBe(true);
    for (const { table, column, value } of await textCells(server)) {
      expect(value, `${table}.${column}`).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+\./);
      expect(value, `${table}.${column}`).not.toMatch(/tsr_[\w-]{16,}/);
    }
  });
});
