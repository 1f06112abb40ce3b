/**
 * End-to-end: the built `tessera` command (node packages/cli/dist/bin.js) in a subprocess, against
 * a real server started in this process on 127.0.0.1 with a temporary SQLite database.
 * Needs the build: `npx tsc -b packages/cli` (root `npm test` builds first).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Deployment, FlowRun, WorkPool } from '@tessera/core';
import { type RunningServer, startServer } from '@tessera/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
const REPO_NODE_MODULES = fileURLToPath(new URL('../../../node_modules', import.meta.url));

let server: RunningServer;
let home: string;
let project: string;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function tessera(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd ?? project,
      env: { PATH: process.env.PATH ?? '', HOME: home, TESSERA_HOME: home, TESSERA_API_URL: server.url, NO_COLOR: '1', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const FLOW = `import { flow, task } from '@tessera/sdk';
import { z } from 'zod';

const greet = task({ name: 'greet' }, async (who: string) => \`hello \${who}\`);

export const hello = flow(
  { name: 'hello', retries: 1, retryDelay: '2s', tags: ['demo'], parameters: z.object({ who: z.string().default('world') }) },
  async ({ who }) => ({ greeting: await greet(who) }),
);
`;

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build the CLI first (npx tsc -b packages/cli)`);
  home = mkdtempSync(join(tmpdir(), 'tessera-cli-e2e-home-'));
  project = mkdtempSync(join(tmpdir(), 'tessera-cli-e2e-project-'));
  // The flow file imports @tessera/sdk and zod like a user project would.
  symlinkSync(REPO_NODE_MODULES, join(project, 'node_modules'), 'dir');
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'e2e-project', type: 'module', private: true }));
  mkdirSync(join(project, 'flows'));
  writeFileSync(join(project, 'flows', 'hello.ts'), FLOW);
  const quiet = new Writable({ write: (_c, _e, done) => done() });
  server = await startServer({ home, port: 0, logLevel: 'warn', logStream: quiet });
});

afterAll(async () => {
  await server?.close();
  for (const dir of [home, project]) if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tessera CLI against a real server', () => {
  it('creates a work pool and lists it as JSON', async () => {
    const created = await tessera(['pools', 'create', 'gpu', '--concurrency-limit', '2']);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    expect(created.stdout).toContain('created work pool gpu (concurrency limit 2)');

    const again = await tessera(['pools', 'create', 'gpu']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error ERR_CONFLICT: /);

    const listed = await tessera(['pools', 'ls', '--json']);
    expect(listed.code).toBe(0);
    const pools = JSON.parse(listed.stdout) as WorkPool[];
    expect(pools.find((p) => p.name === 'gpu')).toMatchObject({ name: 'gpu', concurrencyLimit: 2 });
  });

  it('deploys a tessera.yaml and lists the deployment as JSON', async () => {
    writeFileSync(
      join(project, 'tessera.yaml'),
      `deployments:
  - name: hello-gpu
    entrypoint: flows/hello.ts:hello
    work_pool: gpu
    schedule: { cron: "0 2 * * *", timezone: Europe/Paris }
    parameters: { who: yaml }
    tags: [nightly]
    environment: prod
    identity: { audiences: [sts.amazonaws.com], max_lifetime: 1h }
    retry_delay: 30s
`,
    );
    const deployed = await tessera(['deploy']);
    expect(deployed.stderr).toBe('');
    expect(deployed.code).toBe(0);
    expect(deployed.stdout).toMatch(
      /^✓ hello-gpu {2}flow hello · pool gpu · cron "0 2 \* \* \*" \(Europe\/Paris\) · aud sts\.amazonaws\.com · id [0-9a-f-]{8}\n/,
    );
    expect(deployed.stdout).toContain(`deployed 1 of 1 deployment from tessera.yaml to ${server.url}`);

    const listed = await tessera(['deployments', 'ls', '--json']);
    expect(listed.code).toBe(0);
    const deployments = JSON.parse(listed.stdout) as Deployment[];
    const d = deployments.find((x) => x.name === 'hello-gpu');
    expect(d).toMatchObject({
      name: 'hello-gpu',
      flowName: 'hello',
      entrypoint: 'flows/hello.ts:hello',
      path: project,
      workPool: 'gpu',
      parameters: { who: 'yaml' },
      environment: 'prod',
      retries: 1, // from the flow
      retryDelaysMs: [30_000], // from tessera.yaml, over the flow's 2s
      identity: { audiences: ['sts.amazonaws.com'], maxLifetimeMs: 3_600_000 },
    });
    expect(d?.tags).toEqual(expect.arrayContaining(['demo', 'nightly']));
    expect(d?.schedules).toEqual([expect.objectContaining({ cron: '0 2 * * *', timezone: 'Europe/Paris' })]);
    expect(d?.parameterSchema).toMatchObject({ type: 'object', properties: { who: { type: 'string' } } });
  });

  it('names the yaml line and field when the pool does not exist (exit 2)', async () => {
    const file = join(project, 'missing-pool.yaml');
    writeFileSync(file, 'deployments:\n  - name: orphan\n    entrypoint: flows/hello.ts:hello\n    work_pool: nowhere\n');
    const r = await tessera(['deploy', '--file', 'missing-pool.yaml']);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain(
      'missing-pool.yaml:4:16  deployments[0].work_pool: work pool "nowhere" does not exist on ' +
        `${server.url}; create it with \`tessera pools create nowhere\``,
    );
    expect(r.stdout).toMatch(/deployed 0 of 1 deployment .*; 1 failed/);
  });

  it('names the yaml line and field when the entrypoint does not load (exit 2), deploying nothing', async () => {
    writeFileSync(
      join(project, 'bad-entry.yaml'),
      'deployments:\n  - name: fine\n    entrypoint: flows/hello.ts:hello\n    work_pool: gpu\n  - name: typo\n    entrypoint: flows/hello.ts:helo\n    work_pool: gpu\n',
    );
    const r = await tessera(['deploy', '-f', 'bad-entry.yaml']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^error ERR_ENTRYPOINT: bad-entry\.yaml: 1 problem\n {2}bad-entry\.yaml:6:17 {2}deployments\[1\]\.entrypoint: .*has no export named "helo"; exports that are flows: hello/,
    );
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const listed = JSON.parse((await tessera(['deployments', 'ls', '--json'])).stdout) as Deployment[];
    expect(listed.map((d) => d.name)).not.toContain('fine');
  });

  it('reports an invalid tessera.yaml with file:line:col and exit 2, before contacting the server', async () => {
    writeFileSync(
      join(project, 'bad-cron.yaml'),
      'deployments:\n  - name: x\n    entrypoint: flows/hello.ts:hello\n    schedule: { cron: "0 25 * * *" }\n',
    );
    const r = await tessera(['deploy', '--file', 'bad-cron.yaml'], { env: { TESSERA_API_URL: 'http://127.0.0.1:9' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'error ERR_CONFIG: bad-cron.yaml: 1 problem\n  bad-cron.yaml:4:23  deployments[0].schedule.cron: "0 25 * * *" is not a valid cron expression (hour must be 0-23)\n',
    );
  });

  it('runs a flow in-process with `tessera run`, printing the JSON result, then shows the run', async () => {
    const r = await tessera(['run', 'flows/hello.ts:hello', '--param', 'who=e2e']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ greeting: 'hello e2e' });
    expect(r.stderr).toMatch(/task greet-1 {2}✓ Completed/);
    expect(r.stderr).toMatch(/✓ Completed {2}hello run [0-9a-f]{8} in .* {2}1 task run\n/);

    const runs = JSON.parse((await tessera(['runs', 'ls', '--json', '--limit', '1'])).stdout) as FlowRun[];
    const id = runs[0]?.id as string;
    expect(runs[0]).toMatchObject({
      flowName: 'hello',
      triggerKind: 'adhoc',
      state: { type: 'COMPLETED' },
      result: { greeting: 'hello e2e' },
    });

    const shown = await tessera(['runs', 'show', id.slice(0, 8)]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(`hello / run ${id.slice(0, 8)}`);
    expect(shown.stdout).toMatch(/state {6}✓ Completed {2}attempt 1 of/);
    expect(shown.stdout).toMatch(/greet-1 +✓ Completed/);
    expect(shown.stdout).toContain('result     {"greeting":"hello e2e"}');
  });

  it('exits 1 with a clear error for an unknown run', async () => {
    const r = await tessera(['runs', 'show', 'ffffffff']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error ERR_[A-Z_]+: /);
  });

  it('exits 3 when the server cannot be reached, and 2 on bad usage', async () => {
    const down = await tessera(['deployments', 'ls'], { env: { TESSERA_API_URL: 'http://127.0.0.1:9' } });
    expect(down.code).toBe(3);
    expect(down.stderr).toMatch(/^error ERR_SERVER_UNREACHABLE: cannot reach the Tessera server at http:\/\/127\.0\.0\.1:9/);
    const usage = await tessera(['runs', 'ls', '--limit', 'lots']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--limit must be an integer/);
    const unknown = await tessera(['deplyo']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Did you mean deploy\?/);
  });
});
