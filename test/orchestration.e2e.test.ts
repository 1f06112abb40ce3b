/**
 * End to end: a real server (SQLite), real workers started with the CLI, real flow subprocesses.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type DeploymentSpec, type FlowRun, isTerminal } from '@tessera/core';
import {
  type BackgroundProcess,
  createTestProject,
  runCli,
  startCli,
  startTestServer,
  type TestProject,
  type TestServer,
  waitFor,
} from '@tessera/testing';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FLOWS } from './fixtures.js';

const exec = promisify(execFile);

let server: TestServer;
let project: TestProject;
const workers: BackgroundProcess[] = [];
/** Deployments given a schedule by the current test: their schedules are removed after it. */
const scheduled: string[] = [];

function startWorker(extra: string[] = []): BackgroundProcess {
  const w = startCli(['worker', 'start', '--pool', 'default', '--poll-wait', '2s', '--cancel-grace', '3s', ...extra], {
    env: { TESSERA_API_URL: server.url },
  });
  workers.push(w);
  return w;
}

function deploy(name: string, entry: string, extra: Partial<DeploymentSpec> = {}) {
  if (extra.schedules?.length) scheduled.push(name);
  return server.client.putDeployment({
    name,
    flowName: name,
    entrypoint: `flows.ts:${entry}`,
    path: project.dir,
    workPool: 'default',
    ...extra,
  });
}

/** What a timed-out wait shows: the run's history, and the tails of the workers' and server's logs. */
async function explain(runId?: string): Promise<string> {
  const tail = (text: string, n = 25) => text.trim().split('\n').slice(-n).join('\n');
  const parts: string[] = [];
  if (runId) {
    const states = (await server.client.getFlowRunStates(runId)).items;
    parts.push(`run ${runId} history:\n${states.map((s) => `  ${s.timestamp} ${s.name}${s.message ? `: ${s.message}` : ''}`).join('\n')}`);
  }
  for (const w of workers) parts.push(`worker pid ${w.child.pid} output (tail):\n${tail(w.output())}`);
  parts.push(`server log (tail):\n${tail(server.logs.join('\n'), 40)}`);
  return parts.join('\n');
}

async function finished(id: string, timeoutMs = 30_000): Promise<FlowRun> {
  return waitFor(
    async () => {
      const r = await server.client.getFlowRun(id);
      return isTerminal(r.state.type) ? r : undefined;
    },
    { timeoutMs, what: `run ${id} to finish`, explain: () => explain(id) },
  );
}

async function inState(id: string, type: string, timeoutMs = 30_000): Promise<FlowRun> {
  return waitFor(
    async () => {
      const r = await server.client.getFlowRun(id);
      return r.state.type === type ? r : undefined;
    },
    { timeoutMs, what: `run ${id} to be ${type}`, explain: () => explain(id) },
  );
}

beforeAll(async () => {
  project = createTestProject({ 'flows.ts': FLOWS });
  server = await startTestServer();
  await server.client.createWorkPool({ name: 'default' });
  startWorker();
});

afterEach(async () => {
  // Keep one healthy worker between tests.
  for (const w of workers.splice(1)) await w.kill('SIGKILL');
  // A test that failed half-way must not leave a schedule feeding runs into the next tests' pool.
  for (const name of scheduled.splice(0)) {
    await server.client.putDeployment({
      name,
      flowName: name,
      entrypoint: 'flows.ts:ok',
      path: project.dir,
      workPool: 'default',
      schedules: [],
    });
  }
});

afterAll(async () => {
  for (const w of workers) await w.kill('SIGTERM', 10_000);
  await server.close();
  project.remove();
});

describe('running flows end to end', () => {
  it('runs a flow with parallel tasks and a flaky task that retries, to Completed', async () => {
    await deploy('etl', 'etl');
    const run = await server.client.runDeployment('etl');
    const done = await finished(run.id);
    expect(done.state.type).toBe('COMPLETED');
    expect(done.result).toEqual({ loaded: 'loaded', doubled: [2, 4, 6] });
    const tasks = (await server.client.listTaskRuns(run.id)).items;
    expect(tasks.filter((t) => t.taskKey === 'double')).toHaveLength(3);
    const flaky = tasks.find((t) => t.taskKey === 'flaky');
    expect(flaky?.state.type).toBe('COMPLETED');
    expect(flaky?.attempt).toBe(2);
  });

  it('ends a failing flow Failed, with its error and stack in `tessera runs show`', async () => {
    await deploy('failing', 'failing');
    const run = await server.client.runDeployment('failing');
    const done = await finished(run.id);
    expect(done.state.type).toBe('FAILED');
    expect(done.error).toMatchObject({ name: 'TypeError', message: 'bad row 42: expected a number' });
    const show = await runCli(['runs', 'show', run.id.slice(0, 8)], { env: { TESSERA_API_URL: server.url } });
    expect(show.stdout).toContain('Failed');
    expect(show.stdout).toContain('TypeError: bad row 42: expected a number');
    expect(show.stdout).toMatch(/at .*flows\.ts/);
  });

  it('runs a scheduled deployment on time', async () => {
    await deploy('every-2s', 'ok', { schedules: [{ interval: 2000 }] });
    const first = await waitFor(
      async () => (await server.client.listFlowRuns({ deployment: 'every-2s', state: 'COMPLETED' })).items.at(-1),
      { timeoutMs: 20_000, what: 'a scheduled run to complete', explain: () => explain() },
    );
    expect(first.triggerKind).toBe('schedule');
    // "On time" is the orchestrator's part: the scheduler makes the slot due and a worker claims it
    // (the Pending transition). How long the flow subprocess then takes to boot depends on machine
    // load, which CI does not control, so Running is not the measure.
    const history = (await server.client.getFlowRunStates(first.id)).items;
    const claimed = history.find((s) => s.type === 'PENDING');
    expect(claimed, 'the run has a Pending (claimed) entry').toBeDefined();
    const lateness = Date.parse(claimed?.timestamp as string) - Date.parse(first.expectedStartTime);
    expect(lateness).toBeLessThan(3_000);
  });

  it('cancels a running flow within the grace period', async () => {
    const dir = join(project.dir, 'cancel');
    mkdirSync(dir);
    await deploy('sleeper', 'marker');
    const run = await server.client.runDeployment('sleeper', { parameters: { dir, ms: 60_000 } });
    await inState(run.id, 'RUNNING');
    const res = await runCli(['runs', 'cancel', run.id], { env: { TESSERA_API_URL: server.url } });
    expect(res.code).toBe(0);
    const done = await finished(run.id, 15_000);
    expect(done.state.type).toBe('CANCELLED');
    // Within the grace period (3 s): from the server's Cancelling to its Cancelled, both in the run's
    // history. The CLI's own start-up and this test's polling are not part of it.
    const history = (await server.client.getFlowRunStates(run.id)).items;
    const cancelling = history.find((h) => h.type === 'CANCELLING');
    const cancelled = history.find((h) => h.type === 'CANCELLED');
    expect(cancelling && cancelled, 'Cancelling, then Cancelled, in the history').toBeTruthy();
    expect(Date.parse(cancelled?.timestamp as string) - Date.parse(cancelling?.timestamp as string)).toBeLessThan(3_000 + 2_000);
    expect(existsSync(join(dir, 'done.log'))).toBe(false);
  });

  it('marks a run Crashed when its flow process is killed', async () => {
    const dir = join(project.dir, 'kill-flow');
    mkdirSync(dir);
    await deploy('victim', 'marker');
    const run = await server.client.runDeployment('victim', { parameters: { dir, ms: 60_000 } });
    await inState(run.id, 'RUNNING');
    const pid = Number(await waitFor(() => existsSync(join(dir, `${run.id}.1.pid`)) && readFileSync(join(dir, `${run.id}.1.pid`), 'utf8')));
    process.kill(pid, 'SIGKILL');
    const done = await finished(run.id);
    expect(done.state.type).toBe('CRASHED');
    expect(done.state.message ?? '').toMatch(/SIGKILL|signal/);
  });

  it('crashes the runs of a SIGKILLed worker after the heartbeat timeout and retries them, never running one twice', async () => {
    const dir = join(project.dir, 'kill-worker');
    mkdirSync(dir);
    await deploy('survivor', 'marker', { retries: 1, retryDelaysMs: [0] });
    // Only the doomed worker may claim it: the healthy one stops first, and comes back after the kill.
    // (A worker drains its runs on SIGTERM; one left running by a failed test must not hang this one.)
    await (workers.shift() as BackgroundProcess).kill('SIGTERM', 10_000);
    const doomed = startWorker(['--name', 'doomed']);
    const run = await server.client.runDeployment('survivor', { parameters: { dir, ms: 4_000 } });
    const claimed = await inState(run.id, 'RUNNING');
    expect(claimed.workerName).toBe('doomed');
    await doomed.kill('SIGKILL');
    workers.splice(workers.indexOf(doomed), 1);
    const healthy = startWorker(['--name', 'healthy']);
    workers.splice(workers.indexOf(healthy), 1);
    workers.unshift(healthy);
    const killedAt = Date.now();
    const retried = await waitFor(
      async () => {
        const states = (await server.client.getFlowRunStates(run.id)).items.map((s) => s.name);
        return states.includes('Crashed') ? states : undefined;
      },
      { timeoutMs: 20_000, what: 'zombie detection' },
    );
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(3_000);
    expect(retried).toContain('Crashed');
    const done = await finished(run.id, 30_000);
    expect(done.state.type).toBe('COMPLETED');
    expect(done.attempt).toBe(2);
    expect(done.workerName).toBe('healthy');
    // Attempt 1 died with its worker; only attempt 2 got to the end.
    expect(readFileSync(join(dir, 'done.log'), 'utf8').trim().split('\n')).toEqual([`${run.id} 2`]);
  });

  it('completes a run through a server restart, and keeps one run per schedule slot', async () => {
    const dir = join(project.dir, 'restart');
    mkdirSync(dir);
    await deploy('through-restart', 'marker');
    await deploy('ticking', 'ok', { schedules: [{ interval: 1000 }] });
    const run = await server.client.runDeployment('through-restart', { parameters: { dir, ms: 2_500 } });
    await inState(run.id, 'RUNNING');
    const port = Number(new URL(server.url).port);
    const home = server.home;
    const keepLogs = server.logs;
    await server.stop();
    await new Promise((r) => setTimeout(r, 1_500));
    const old = server;
    // Its fresh signing keys sign at once (no relying party cached this test's JWKS): the identity tests below use it.
    const restarted = await startTestServer({
      home,
      port,
      keys: { startPublish: 0 },
      ...(old.databaseUrl ? { databaseUrl: old.databaseUrl } : {}),
    });
    restarted.logs.push(...keepLogs);
    server = restarted;
    server.close = async () => {
      await restarted.stop();
      await old.close();
    };
    const done = await finished(run.id, 30_000);
    expect(done.state.type).toBe('COMPLETED');
    expect(readFileSync(join(dir, 'executions.log'), 'utf8').trim().split('\n')).toHaveLength(1);
    const ticks = (await server.client.listFlowRuns({ deployment: 'ticking', limit: 1000 })).items.map((r) => r.expectedStartTime);
    expect(ticks.length).toBeGreaterThan(2);
    expect(new Set(ticks).size).toBe(ticks.length);
  });
});

describe('errors that teach', () => {
  it('refuses invalid parameters naming each field, and creates no run', async () => {
    project.write('tessera.yaml', 'deployments:\n  - name: cli-marker\n    entrypoint: flows.ts:marker\n    work_pool: default\n');
    const env = { TESSERA_API_URL: server.url };
    const deployed = await runCli(['deploy', '--file', join(project.dir, 'tessera.yaml')], { env });
    expect(deployed.code, deployed.stderr).toBe(0);
    const res = await runCli(['deployments', 'run', 'cli-marker', '--param', 'ms=soon'], { env });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('ERR_INVALID_PARAMETERS');
    expect(res.stderr).toContain('invalid parameters for deployment "cli-marker"');
    expect(res.stderr).toMatch(/\bdir\b/);
    expect(res.stderr).toMatch(/\bms\b/);
    expect((await server.client.listFlowRuns({ deployment: 'cli-marker' })).items).toHaveLength(0);
  });
});

describe('identity end to end', () => {
  it('gives flow code a token that verifies through discovery with jose and PyJWT, masked in logs', async () => {
    const dir = join(project.dir, 'token');
    mkdirSync(dir);
    await deploy('tokened', 'withToken', { identity: { audiences: ['vault.internal'] }, environment: 'staging' });
    const run = await server.client.runDeployment('tokened', { parameters: { dir, audience: 'vault.internal' } });
    const done = await finished(run.id);
    expect(done.state.type).toBe('COMPLETED');
    const token = readFileSync(join(dir, 'token.jwt'), 'utf8');
    const jwks = createRemoteJWKSet(new URL(`${server.issuer}/.well-known/jwks.json`));
    const { payload } = await jwtVerify(token, jwks, { issuer: server.issuer, audience: 'vault.internal' });
    expect(payload).toMatchObject({
      sub: 'ws:default:deployment:tokened:env:staging',
      run_id: run.id,
      run_attempt: 1,
      deployment: 'tokened',
      flow: 'tokened',
    });
    const py = `
import json, sys, urllib.request, jwt
doc = json.load(urllib.request.urlopen(sys.argv[1] + "/.well-known/openid-configuration"))
key = jwt.PyJWKClient(doc["jwks_uri"]).get_signing_key_from_jwt(sys.argv[3])
print(json.dumps(jwt.decode(sys.argv[3], key.key, algorithms=["RS256"], audience=sys.argv[2], issuer=doc["issuer"])))
`;
    const { stdout } = await exec('/usr/bin/python3', ['-c', py, server.issuer, 'vault.internal', token]);
    expect(JSON.parse(stdout).run_id).toBe(run.id);
    const logs = (await server.client.getLogs(run.id)).items.map((l) => l.message).join('\n');
    expect(logs).toContain('got token [redacted JWT');
    expect(logs).not.toContain(token);
  });

  it('refuses an audience the deployment does not allow, failing the run with the reason', async () => {
    const dir = join(project.dir, 'bad-aud');
    mkdirSync(dir);
    await deploy('tokened-2', 'withToken', { identity: { audiences: ['sts.amazonaws.com'] } });
    const run = await server.client.runDeployment('tokened-2', { parameters: { dir, audience: 'sts.amazon.com' } });
    const done = await finished(run.id);
    expect(done.state.type).toBe('FAILED');
    expect(done.error?.message).toContain('audience "sts.amazon.com" is not allowed for deployment "tokened-2"');
    expect(done.error?.message).toContain('Did you mean "sts.amazonaws.com"?');
  });

  it('never writes a token or credential to the server log', () => {
    const joined = server.logs.join('\n');
    expect(joined).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
    expect(joined).not.toMatch(/tsr_[A-Za-z0-9_-]{20,}/);
  });
});
