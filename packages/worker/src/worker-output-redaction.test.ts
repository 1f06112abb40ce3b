/**
 * A flow process that prints its own identity token: the worker relays its stdout and stderr, and
 * keeps a stderr tail for the crash message, only after `redactSecrets` (lib/flow-process.ts).
 * Against the fake API, whose identity tokens are JWT-shaped; the flow is a real subprocess.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { FakeTesseraApi } from '../test/fake-api.js';
import { Collector, collectingLogger, tempDir, waitFor } from '../test/helpers.js';
import { writeTestRunner } from '../test/runner.js';
import { createWorker, type Worker, type WorkerEvent } from './index.js';

const runnerModule = writeTestRunner();

/** Asks for a token with the run credential, the way any process of the run can, and prints it every way a flow might. */
const LEAKY_FLOW = `
export async function leak() {
  const res = await fetch(process.env.TESSERA_API_URL + '/api/identity/token', {
    method: 'POST',
    headers: { authorization: 'Bearer ' + process.env.TESSERA_RUN_CREDENTIAL, 'content-type': 'application/json' },
    body: JSON.stringify({ audience: 'vault.internal' }),
  });
  const { token } = await res.json();
  console.log(token);
  console.log('token for vault: ' + token + ' (expires soon)');
  process.stdout.write('partial ' + token.slice(0, 20));
  process.stdout.write(token.slice(20) + ' written in two chunks\\n');
  console.error('authorization: Bearer ' + token);
  process.exit(Number(process.env.LEAK_EXIT_CODE ?? 0));
}
`;

let fake: FakeTesseraApi;
let worker: Worker;
let events: WorkerEvent[];
let logger: ReturnType<typeof collectingLogger>;
let out: Collector;
let err: Collector;
let dir: string;

beforeEach(async () => {
  fake = new FakeTesseraApi();
  await fake.start();
  events = [];
  logger = collectingLogger();
  out = new Collector();
  err = new Collector();
  dir = tempDir();
  writeFileSync(join(dir, 'leaky.mjs'), LEAKY_FLOW);
  worker = createWorker({
    apiUrl: fake.url,
    pool: 'default',
    runnerModule,
    pollWaitMs: 5000,
    cancelGraceMs: 300,
    serverRetryForMs: 5_000,
    logger,
    output: { stdout: out, stderr: err },
    onEvent: (event) => events.push(event),
  });
  worker.start();
});

afterEach(async () => {
  const stopped = worker.stop();
  void worker.stop(); // a second call stops what still runs (the open poll)
  await stopped;
  await fake.stop();
});

function reported(runId: string) {
  return waitFor(`run ${runId} to be reported`, () => events.find((e) => e.type === 'reported' && e.runId === runId));
}

// Catches: flow-process.ts relaying a flow's output (stdout, stderr, or the stderr tail of the crash
// message) without redactSecrets — a token printed by flow code would reach the worker's terminal and logs.
test('masks the identity token a flow process prints, on stdout, on stderr and in the crash message', async () => {
  await waitFor('a held poll', () => fake.holdingPoll);
  const id = fake.enqueue({ path: dir, entrypoint: 'leaky.mjs:leak', env: { TEST_BEHAVIOUR: 'entrypoint', LEAK_EXIT_CODE: '3' } });
  await reported(id);
  const token = fake.tokens.find((t) => t.runId === id)?.token ?? '';
  expect(token).toMatch(/^eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+$/);
  const prefix = `[run ${id.slice(0, 4)}] `;
  const mask = `[redacted JWT …${token.slice(-4)}]`;
  expect(out.text).toContain(`${prefix}${mask}\n`);
  expect(out.text).toContain(`${prefix}token for vault: ${mask} (expires soon)\n`);
  expect(out.text).toContain(`${prefix}partial ${mask} written in two chunks\n`);
  expect(err.text).toContain(`${prefix}authorization: Bearer ${mask}\n`);
  const crash = fake.proposals.find((p) => p.runId === id)?.body.state.message ?? '';
  expect(crash).toMatch(/^flow process exited with code 3/);
  expect(crash).toContain(`authorization: Bearer ${mask}`);

  const everything = [out.text, err.text, ...logger.lines, JSON.stringify(events), JSON.stringify(fake.proposals)].join('\n');
  expect(everything).not.toContain(token);
  // Not even the unsigned part (header.payload), which names the run and audience.
  expect(everything).not.toContain(token.slice(0, token.lastIndexOf('.')));
});
