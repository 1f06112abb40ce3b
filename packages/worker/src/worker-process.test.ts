import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, test } from 'vitest';
import { FakeTesseraApi } from '../test/fake-api.js';
import { processAlive, tempDir, waitFor } from '../test/helpers.js';
import { writeTestRunner } from '../test/runner.js';

const indexPath = fileURLToPath(new URL('./index.ts', import.meta.url));
let fake: FakeTesseraApi | undefined;
let workerProcess: ChildProcess | undefined;
let flowPid: number | undefined;

afterEach(async () => {
  workerProcess?.kill('SIGKILL');
  if (flowPid && processAlive(flowPid)) process.kill(flowPid, 'SIGKILL');
  await fake?.stop();
});

test('a flow process dies when its worker process is SIGKILLed, so a retried run cannot execute twice', async () => {
  fake = new FakeTesseraApi();
  await fake.start();
  const dir = tempDir();
  const script = join(tempDir('tessera-worker-'), 'worker-main.mts');
  writeFileSync(
    script,
    `import { createWorker } from ${JSON.stringify(indexPath)};
const worker = createWorker({
  apiUrl: process.env.API_URL!,
  pool: 'default',
  runnerModule: process.env.RUNNER!,
  pollWaitMs: 1000,
  logger: { info: () => {}, warn: console.error, error: console.error },
});
worker.start();
`,
  );
  let stderr = '';
  workerProcess = spawn(process.execPath, ['--conditions=source', '--import', import.meta.resolve('tsx'), script], {
    env: { ...process.env, API_URL: fake.url, RUNNER: writeTestRunner() },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  workerProcess.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });

  const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'sleep', TEST_SLEEP_MS: '60000' } });
  const started = await waitFor(
    'the run to start',
    () => {
      try {
        return JSON.parse(readFileSync(join(dir, `started-${id}.json`), 'utf8')) as { pid: number };
      } catch {
        return undefined;
      }
    },
    20_000,
  ).catch((e: Error) => {
    throw new Error(`${e.message}; worker stderr: ${stderr}`);
  });
  flowPid = started.pid;
  expect(processAlive(flowPid)).toBe(true);

  workerProcess.kill('SIGKILL');
  await waitFor('the flow process to die', () => !processAlive(started.pid), 5000);
  expect(fake.proposals).toEqual([]);
});
