/**
 * The worker's side of token files, against the fake API: projected before the process starts,
 * removed however the run ends. Interop with the real cloud SDKs is in test/token-files.e2e.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { TokenFilesSpec } from '@tessera/core';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { FakeTesseraApi } from '../test/fake-api.js';
import { Collector, collectingLogger, tempDir, waitFor } from '../test/helpers.js';
import { writeTestRunner } from '../test/runner.js';
import { createWorker, type Worker, type WorkerEvent } from './index.js';

const runnerModule = writeTestRunner();
const AWS: TokenFilesSpec = { aws: { roleArn: 'arn:aws:iam::123456789012:role/etl' } };
const sleeper = (ms = 60_000) => ({ TEST_BEHAVIOUR: 'sleep', TEST_SLEEP_MS: String(ms) });

let fake: FakeTesseraApi;
let worker: Worker | undefined;
let events: WorkerEvent[];
let logger: ReturnType<typeof collectingLogger>;
let out: Collector;
let dir: string;
let tokenDir: string;

beforeEach(async () => {
  fake = new FakeTesseraApi();
  await fake.start();
  events = [];
  logger = collectingLogger();
  out = new Collector();
  dir = tempDir();
  tokenDir = join(tempDir('tessera-token-base-'), 'tokens');
  worker = createWorker({
    apiUrl: fake.url,
    pool: 'default',
    runnerModule,
    pollWaitMs: 5000,
    cancelGraceMs: 300,
    serverRetryForMs: 5_000,
    tokenDir,
    logger,
    output: { stdout: out, stderr: out },
    onEvent: (event) => events.push(event),
  });
  worker.start();
});

afterEach(async () => {
  const stopped = worker?.stop();
  void worker?.stop();
  await stopped;
  await fake.stop();
  // No token and no credential in anything the worker logged or relayed.
  const everything = [...logger.lines, out.text, JSON.stringify(events)].join('\n');
  for (const { token } of fake.tokens) expect(everything).not.toContain(token);
  for (const run of fake.runs.values()) if (run.credential) expect(everything).not.toContain(run.credential);
});

function eventOf<T extends WorkerEvent['type']>(type: T, runId: string) {
  return events.find((e) => e.type === type && 'runId' in e && e.runId === runId) as Extract<WorkerEvent, { type: T }> | undefined;
}

interface Started {
  env: Record<string, string>;
  tokenFiles: Record<string, boolean>;
}

function started(runId: string): Promise<Started> {
  return waitFor(`run ${runId} to start`, () => {
    try {
      return JSON.parse(readFileSync(join(dir, `started-${runId}.json`), 'utf8')) as Started;
    } catch {
      return undefined;
    }
  });
}

const tokenDirs = () => (existsSync(tokenDir) ? readdirSync(tokenDir) : []);

describe('token files in a run', () => {
  test('are written before the flow process starts, with its own credential, and removed when it ends', async () => {
    const id = fake.enqueue({
      path: dir,
      env: sleeper(1_000),
      tokenFiles: { ...AWS, azure: { clientId: 'c1', tenantId: 't1' } },
    });
    const info = await started(id);
    expect(info.tokenFiles).toEqual({ AWS_WEB_IDENTITY_TOKEN_FILE: true, AZURE_FEDERATED_TOKEN_FILE: true });
    expect(info.env).toMatchObject({
      AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/etl',
      AWS_ROLE_SESSION_NAME: id,
      AZURE_CLIENT_ID: 'c1',
    });
    const runDir = dirname(info.env.AWS_WEB_IDENTITY_TOKEN_FILE as string);
    expect(dirname(runDir)).toBe(tokenDir);
    expect(statSync(runDir).mode & 0o777).toBe(0o700);
    expect(readFileSync(info.env.AWS_WEB_IDENTITY_TOKEN_FILE as string, 'utf8')).toBe(
      fake.tokens.find((t) => t.runId === id && t.audience === 'sts.amazonaws.com')?.token,
    );
    await waitFor('the report', () => eventOf('reported', id));
    expect(existsSync(runDir)).toBe(false);
    expect(tokenDirs()).toEqual([]);
  });

  test('a refused first token crashes the run without starting it, naming the audience problem', async () => {
    fake.refusedAudiences.add('api://AzureADTokenExchange');
    const id = fake.enqueue({ path: dir, env: sleeper(), tokenFiles: { ...AWS, azure: { clientId: 'c1', tenantId: 't1' } } });
    await waitFor('the report', () => eventOf('reported', id));
    expect(eventOf('started', id)).toBeUndefined();
    expect(fake.state(id)).toBe('CRASHED');
    const message = fake.proposals.find((p) => p.runId === id)?.body.state.message ?? '';
    expect(message).toContain('flow process could not be started');
    expect(message).toContain('identity.tokenFiles.azure, audience "api://AzureADTokenExchange"');
    expect(message).toContain('is not allowed for deployment "test-deployment"');
    expect(tokenDirs()).toEqual([]);
  });

  test('are removed when the run is cancelled', async () => {
    const id = fake.enqueue({ path: dir, env: sleeper(), tokenFiles: AWS });
    await started(id);
    expect(tokenDirs()).toHaveLength(1);
    fake.cancel(id);
    await waitFor('the report', () => eventOf('reported', id));
    expect(fake.state(id)).toBe('CANCELLED');
    expect(tokenDirs()).toEqual([]);
  });

  test('are removed when the server forgets the run', async () => {
    const id = fake.enqueue({ path: dir, env: sleeper(), tokenFiles: AWS });
    await started(id);
    fake.forget(id);
    await waitFor('the process to exit', () => eventOf('exited', id));
    await waitFor('the token directory to go', () => tokenDirs().length === 0);
  });

  test('are removed when the flow process crashes', async () => {
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'exit', TEST_EXIT_CODE: '2' }, tokenFiles: AWS });
    await waitFor('the report', () => eventOf('reported', id));
    expect(fake.state(id)).toBe('CRASHED');
    expect(fake.tokens.some((t) => t.runId === id)).toBe(true);
    expect(tokenDirs()).toEqual([]);
  });

  test('are removed when the worker stops its runs', async () => {
    const id = fake.enqueue({ path: dir, env: sleeper(), tokenFiles: AWS });
    await started(id);
    expect(tokenDirs()).toHaveLength(1);
    await worker?.stop({ timeoutMs: 100 });
    expect(fake.state(id)).toBe('CRASHED');
    expect(tokenDirs()).toEqual([]);
  });

  test('a run without token files gets no token directory and no cloud variables', async () => {
    const id = fake.enqueue({ path: dir, env: sleeper(200) });
    const info = await started(id);
    expect(info.tokenFiles).toEqual({});
    expect(fake.tokens).toEqual([]);
    expect(existsSync(tokenDir)).toBe(false);
  });
});

describe('token files of a killed worker', () => {
  test('a worker that starts removes the run directories a killed worker left behind', async () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid as number;
    const leftover = join(tokenDir, `tessera-run-7f3c1a2b-${dead}-Ab12Cd`);
    mkdirSync(leftover, { recursive: true, mode: 0o700 });
    writeFileSync(join(leftover, 'aws-web-identity-token'), 'a token that is still valid', { mode: 0o600 });
    const second = createWorker({
      apiUrl: fake.url,
      pool: 'default',
      runnerModule,
      pollWaitMs: 200,
      tokenDir,
      logger,
      output: { stdout: out, stderr: out },
    });
    second.start();
    try {
      await waitFor('the leftover directory to be removed', () => !existsSync(leftover) || undefined);
      expect(logger.lines.join('\n')).toContain(`left behind by worker process ${dead}, which is gone`);
    } finally {
      await second.stop();
    }
  });
});
