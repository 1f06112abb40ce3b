import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RUN_ENV } from '@tessera/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeServer, startFakeServer } from '../test-support/fake-server.js';

const bin = fileURLToPath(new URL('../bin/run-flow.ts', import.meta.url));
const fixtures = fileURLToPath(new URL('../test-support/fixtures/', import.meta.url));

let server: FakeServer;
beforeAll(async () => {
  server = await startFakeServer({ audiences: ['sts.amazonaws.com'] });
});
afterAll(() => server.stop());

interface Started {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
}

/** Starts a flow-run process the way a worker does: node + tsx, the run's environment, an IPC channel. */
function startProcess(entrypoint: string, credential: string, runId: string, ipc = false): Started {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', bin], {
    cwd: fixtures,
    env: {
      PATH: process.env.PATH,
      [RUN_ENV.apiUrl]: server.baseUrl,
      [RUN_ENV.runId]: runId,
      [RUN_ENV.attempt]: '1',
      [RUN_ENV.credential]: credential,
      [RUN_ENV.entrypoint]: entrypoint,
    },
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, exit, output: () => out };
}

async function waitFor(predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('runFlowProcess (a real subprocess)', () => {
  it('runs the entrypoint, hides the credential from user code, and reports Completed with the result', async () => {
    const { run, credential } = server.addRun({ flowName: 'inspect-env', parameters: { word: 'hi' } });
    const p = startProcess('process-flows.ts:inspectEnv', credential, run.id);
    const { code } = await p.exit;
    expect(code, p.output()).toBe(0);
    const final = server.runs.get(run.id);
    expect(final?.state.type).toBe('COMPLETED');
    expect(final?.result).toEqual({ credentialVisible: false, shouted: 'HI', runId: run.id, attempt: 1 });
    const logs = server.logs.filter((l) => l.flowRunId === run.id);
    const tokenLine = logs.find((l) => l.message.startsWith('token:'));
    expect(tokenLine?.message).toMatch(/^token: \[redacted JWT …/);
    expect(p.output()).not.toMatch(/eyJ[\w-]+\.eyJ/);
    expect(p.output()).not.toContain(credential);
    const taskEvents = server.events.filter((e) => e.flowRunId === run.id);
    expect(taskEvents.map((e) => e.state.type)).toEqual(['PENDING', 'RUNNING', 'COMPLETED']);
  });

  it('reports Failed with ERR_INVALID_PARAMETERS and exits 0 when parameters are invalid', async () => {
    const { run, credential } = server.addRun({ flowName: 'inspect-env', parameters: { word: 7 } });
    const p = startProcess('process-flows.ts:inspectEnv', credential, run.id);
    expect((await p.exit).code, p.output()).toBe(0);
    const final = server.runs.get(run.id);
    expect(final?.state.type).toBe('FAILED');
    expect(final?.error).toMatchObject({ code: 'ERR_INVALID_PARAMETERS', message: expect.stringContaining('word: Invalid input') });
  });

  it('reports Failed with ERR_ENTRYPOINT when the export does not exist', async () => {
    const { run, credential } = server.addRun({ flowName: 'x' });
    const p = startProcess('process-flows.ts:nope', credential, run.id);
    expect((await p.exit).code, p.output()).toBe(0);
    expect(server.runs.get(run.id)?.error).toMatchObject({
      code: 'ERR_ENTRYPOINT',
      message: expect.stringMatching(
        /has no export named "nope"; exports that are flows: crashesInCallback, failing, inspectEnv, sleeper$/,
      ),
    });
  });

  it('reports Failed with the task error when the flow fails', async () => {
    const { run, credential } = server.addRun({ flowName: 'failing' });
    const p = startProcess('process-flows.ts:failing', credential, run.id);
    expect((await p.exit).code, p.output()).toBe(0);
    expect(server.runs.get(run.id)?.error).toMatchObject({ name: 'TaskRunError', code: 'ERR_TASK_FAILED' });
  });

  it('fails the run with an exception thrown from a callback instead of crashing', async () => {
    const { run, credential } = server.addRun({ flowName: 'crashes-in-callback' });
    const p = startProcess('process-flows.ts:crashesInCallback', credential, run.id);
    expect((await p.exit).code, p.output()).toBe(0);
    expect(server.runs.get(run.id)?.error).toMatchObject({ message: 'thrown from a timer' });
  });

  it('does not run the flow when the server refuses Running (run cancelled meanwhile)', async () => {
    const { run, credential } = server.addRun({ flowName: 'inspect-env', parameters: { word: 'hi' } });
    server.setState(run.id, 'CANCELLING');
    const p = startProcess('process-flows.ts:inspectEnv', credential, run.id);
    expect((await p.exit).code, p.output()).toBe(0);
    expect(server.runs.get(run.id)?.state.type).toBe('CANCELLING');
    expect(server.events.some((e) => e.flowRunId === run.id)).toBe(false);
    const messages = server.logs.filter((l) => l.flowRunId === run.id).map((l) => l.message);
    expect(messages, p.output()).toEqual([
      expect.stringMatching(/the server did not let this run start \(it is Cancelling\); nothing was executed/),
    ]);
  });

  it('flushes logs and exits 143 on SIGTERM without proposing a final state', async () => {
    const { run, credential } = server.addRun({ flowName: 'sleeper' });
    const p = startProcess('process-flows.ts:sleeper', credential, run.id);
    await waitFor(() => p.output().includes('going to sleep'));
    p.child.kill('SIGTERM');
    const { code } = await p.exit;
    expect(code, p.output()).toBe(143);
    expect(server.runs.get(run.id)?.state.type).toBe('RUNNING');
    const messages = server.logs.filter((l) => l.flowRunId === run.id).map((l) => l.message);
    expect(messages).toContain('going to sleep');
    expect(messages.some((m) => m.includes('SIGTERM'))).toBe(true);
  });

  it('exits 1 at once when the IPC channel to its worker closes', async () => {
    const { run, credential } = server.addRun({ flowName: 'sleeper' });
    const p = startProcess('process-flows.ts:sleeper', credential, run.id, true);
    await waitFor(() => p.output().includes('going to sleep'));
    p.child.disconnect();
    const { code } = await p.exit;
    expect(code).toBe(1);
  });

  it('exits 1 without a run credential', async () => {
    const p = startProcess('process-flows.ts:sleeper', '', 'some-run');
    expect((await p.exit).code).toBe(1);
    expect(p.output()).toMatch(/TESSERA_RUN_CREDENTIAL not set/);
  });
});
