/**
 * A stand-in for the SDK's flow-process entry (`@tessera/sdk/run-flow`), written to a temp dir by
 * the tests. Like the real one it exits when the worker's IPC channel closes. What it does is
 * chosen by the claim's env (it also records which token files existed when it started): TEST_BEHAVIOUR = sleep | exit | ignore-term | complete | entrypoint | orphan.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const RUNNER_SOURCE = `
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const env = process.env;
const runId = env.TESSERA_RUN_ID;
const behaviour = env.TEST_BEHAVIOUR ?? 'sleep';
process.on('disconnect', () => process.exit(70));
if (behaviour === 'ignore-term') process.on('SIGTERM', () => writeFileSync('sigterm-' + runId, String(Date.now())));
const seen = {};
for (const [k, v] of Object.entries(env)) if (/^(TESSERA_|TEST_|FROM_|AWS_|AZURE_|GOOGLE_)/.test(k)) seen[k] = v;
const tokenFiles = {};
for (const k of ['AWS_WEB_IDENTITY_TOKEN_FILE', 'AZURE_FEDERATED_TOKEN_FILE', 'GOOGLE_APPLICATION_CREDENTIALS']) if (env[k]) tokenFiles[k] = existsSync(env[k]);
writeFileSync('started-' + runId + '.json', JSON.stringify({ pid: process.pid, cwd: process.cwd(), hasIpc: typeof process.send === 'function', env: seen, tokenFiles }));
console.log('hello from the flow process');
if (env.TEST_LEAK) console.error('oops: ' + env.TESSERA_RUN_CREDENTIAL);
if (behaviour === 'sleep') {
  setTimeout(() => process.exit(0), Number(env.TEST_SLEEP_MS ?? 60000));
} else if (behaviour === 'exit') {
  for (const line of (env.TEST_STDERR ?? '').split('|')) if (line) console.error(line);
  process.exit(Number(env.TEST_EXIT_CODE ?? 1));
} else if (behaviour === 'ignore-term') {
  setInterval(() => {}, 1000);
} else if (behaviour === 'orphan') {
  // Starts a process of its own (same process group) and exits without waiting for it.
  const child = spawn(process.execPath, ['-e', 'process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  child.unref();
  writeFileSync('child-' + runId, String(child.pid));
  setTimeout(() => process.exit(0), 100);
} else if (behaviour === 'entrypoint') {
  const [file, name] = env.TESSERA_ENTRYPOINT.split(':');
  const mod = await import(pathToFileURL(process.cwd() + '/' + file).href);
  writeFileSync('result-' + runId, String(await mod[name]()));
  process.exit(0);
} else if (behaviour === 'complete') {
  const propose = (type) => fetch(env.TESSERA_API_URL + '/api/flow-runs/' + runId + '/state', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + env.TESSERA_RUN_CREDENTIAL },
    body: JSON.stringify({ state: { type } }),
  }).then((r) => { if (!r.ok) throw new Error('HTTP ' + r.status); });
  await propose('RUNNING');
  await propose('COMPLETED');
  process.exit(0);
}
`;

/** Writes the test runner to a fresh temp dir and returns its path. */
export function writeTestRunner(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-runner-'));
  const path = join(dir, 'run-flow.mjs');
  writeFileSync(path, RUNNER_SOURCE);
  return path;
}
