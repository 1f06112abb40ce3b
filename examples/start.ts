/**
 * What `npm start` runs: `tessera dev` (server + worker on embedded SQLite) with the examples
 * deployed, the protected API example beside it, one example run, and where to look next.
 *
 *   node --import tsx examples/start.ts [--port 4200] [--api-port 4300] [--once]
 *
 * `--once` stops everything after the example run (used by the tests).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createApiClient, type FlowRun, formatDuration, isTerminal } from '@tessera/core';

const root = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.TESSERA_PORT ?? '4200' },
    'api-port': { type: 'string', default: '4300' },
    home: { type: 'string', default: process.env.TESSERA_HOME ?? join(root, '.tessera', 'dev') },
    once: { type: 'boolean', default: false },
  },
});
const port = Number(values.port);
const apiPort = Number(values['api-port']);
const apiUrl = `http://127.0.0.1:${port}`;
const color = !process.env.NO_COLOR && process.stdout.isTTY;
const green = (s: string) => (color ? `\x1b[32m${s}\x1b[0m` : s);
const red = (s: string) => (color ? `\x1b[31m${s}\x1b[0m` : s);
const dim = (s: string) => (color ? `\x1b[2m${s}\x1b[0m` : s);

const children: ChildProcess[] = [];
function start(args: string[], env: Record<string, string>, label: string, echo: boolean): ChildProcess {
  const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let buffered = '';
  const onData = (d: Buffer) => {
    if (echo) process.stdout.write(d);
    else buffered += d;
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  child.on('exit', (code, signal) => {
    if (!stopping) {
      process.stderr.write(`${red('✗')} ${label} exited (${signal ?? code}) unexpectedly\n${buffered.slice(-4000)}\n`);
      shutdown(1);
    }
  });
  children.push(child);
  return child;
}

let stopping = false;
async function shutdown(code: number): Promise<never> {
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

const client = createApiClient({ baseUrl: apiUrl });
async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      process.stderr.write(`${red('✗')} timed out waiting for ${what}\n`);
      return shutdown(1);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The dev server prints its own banner (server, worker, deployments).
start(
  [
    join(root, 'packages/cli/dist/bin.js'),
    'dev',
    '--port',
    String(port),
    '--home',
    values.home as string,
    '--deploy',
    join(root, 'examples/tessera.yaml'),
  ],
  {},
  'tessera dev',
  true,
);
await until('the server', async () => ((await fetch(`${apiUrl}/readyz`)).ok ? true : undefined));
start(
  ['--import', 'tsx', join(root, 'examples/protected-api.ts')],
  { TESSERA_ISSUER: apiUrl, PORT: String(apiPort) },
  'protected-api',
  false,
);
await until('the protected API', async () => ((await fetch(`http://127.0.0.1:${apiPort}/`)).status === 401 ? true : undefined));
await until('the example deployments', async () =>
  (await client.listDeployments()).items.some((d) => d.name === 'call-protected-api') ? true : undefined,
);

if (apiPort !== 4300) {
  // examples/tessera.yaml allows the protected API's default address; follow it to the port in use.
  const d = await client.getDeployment('call-protected-api');
  await client.putDeployment({
    name: d.name,
    flowName: d.flowName,
    entrypoint: d.entrypoint,
    path: d.path,
    workPool: d.workPool,
    parameters: d.parameters,
    parameterSchema: d.parameterSchema,
    tags: d.tags,
    environment: d.environment,
    retries: d.retries,
    retryDelaysMs: d.retryDelaysMs,
    identity: { ...d.identity, audiences: [`http://127.0.0.1:${apiPort}`] },
  });
}
const run = await client.runDeployment('call-protected-api', { parameters: { url: `http://127.0.0.1:${apiPort}/whoami` } });
const started = Date.now();
const final: FlowRun = await until('the example run', async () => {
  const r = await client.getFlowRun(run.id);
  return isTerminal(r.state.type) ? r : undefined;
});
const short = run.id.slice(0, 8);
const took = final.startTime && final.endTime ? Date.parse(final.endTime) - Date.parse(final.startTime) : Date.now() - started;
const ok = final.state.type === 'COMPLETED';
const line = (label: string, text: string) => process.stdout.write(`  ${label.padEnd(8)} ${text}\n`);
process.stdout.write('\n');
line('run', `call-protected-api  #${short}  ${ok ? green('✓') : red('✗')} ${final.state.name} in ${formatDuration(took)}`);
if (ok) {
  const result = final.result as { token: { sub: string; aud: string; exp: number; kid: string; alg: string }; acceptedBy: string };
  const inMin = Math.round((result.token.exp * 1000 - Date.now()) / 60_000);
  line('', `identity token: sub "${result.token.sub}"  aud "${result.token.aud}"`);
  line('', `                exp in ${inMin} min, ${result.token.alg}, kid ${result.token.kid}   → accepted by examples/protected-api`);
} else {
  line('', red(`${final.error?.name ?? 'Error'}: ${final.error?.message ?? final.state.message ?? ''}`));
}
line('next:', `tessera runs ls   ·   tessera runs show ${short}   ·   open ${apiUrl}/docs`);
line('', dim(`(CLI: node packages/cli/dist/bin.js …, or npx tessera …; Ctrl-C stops everything)`));
if (values.once) await shutdown(ok ? 0 : 1);
