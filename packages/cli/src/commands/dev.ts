import { isTesseraError } from '@tessera/core';
import type { Worker } from '@tessera/worker';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { formatError } from '../lib/exit.js';
import { examples, parseIntOption } from '../lib/options.js';
import { deployExitCode, deployProject, formatDeployOutcomes } from './deploy.js';
import { addServerOptions, type ServerFlags, startConfiguredServer } from './server.js';
import { createWorkerLogger, stopOnSignals } from './worker.js';

interface DevFlags extends ServerFlags {
  pool: string;
  concurrency: number;
  deploy?: string;
}

/** `tessera dev`: server + worker in one process, for local development. */
export function registerDevCommand(program: Command, ctx: () => CliContext): void {
  addServerOptions(
    program
      .command('dev')
      .description('start a local server and a worker in one process (and optionally deploy a tessera.yaml); Ctrl+C stops both')
      .option('--pool <name>', 'work pool of the worker; created if missing', 'default')
      .option('--concurrency <n>', 'most flow runs at once', parseIntOption('--concurrency', 1), 8)
      .option('--deploy <file>', 'deploy this tessera.yaml once the server is up'),
  )
    .addHelpText(
      'after',
      `
Local mode: a single user, listening on loopback only. Data lives in --home (default ~/.tessera).
${examples(['tessera dev'], ['tessera dev --deploy tessera.yaml', 'then: tessera deployments run hello --watch'], ['tessera dev --port 0 --home /tmp/tessera-scratch'])}`,
    )
    .action(async (opts: DevFlags) => {
      const c = ctx();
      const s = c.style;
      const { server, config } = await startConfiguredServer(c, opts, { logLevel: 'warn', localMode: true });
      const client = c.client(server.url);
      const lines: string[] = [];
      let worker: Worker | undefined;
      try {
        const existing = await client.getWorkPool(opts.pool).catch((e: unknown) => {
          if (isTesseraError(e) && (e.code === 'ERR_UNKNOWN_POOL' || e.code === 'ERR_NOT_FOUND')) return undefined;
          throw e;
        });
        if (!existing) await client.createWorkPool({ name: opts.pool, description: 'created by tessera dev' });

        const { createWorker } = await import('@tessera/worker');
        worker = createWorker({
          apiUrl: server.url,
          pool: opts.pool,
          concurrency: opts.concurrency,
          name: 'dev-worker',
          // Short polls: Ctrl-C waits for the open poll, and runs are woken up on time anyway.
          pollWaitMs: 2_000,
          logger: createWorkerLogger(c.io.stderr, { style: c.errStyle, timeZone: c.timeZone }),
        });

        lines.push(
          `  ${s.bold('tessera dev')} — local mode ${s.dim('(single user, loopback only; configure an identity provider to share it)')}`,
        );
        lines.push(
          `  server   ${s.bold(server.url)}   ${s.dim(`(API docs ${server.url}/docs, issuer ${server.issuer}/.well-known/openid-configuration)`)}`,
        );
        lines.push(`  data     ${config.databaseUrl ?? config.home}`);
        lines.push(`  worker   pool "${opts.pool}"${existing ? '' : s.dim(' (created)')}, concurrency ${opts.concurrency}`);

        let firstDeployment: string | undefined;
        if (opts.deploy) {
          try {
            const result = await deployProject(client, { file: opts.deploy, cwd: c.io.cwd });
            const ok = result.outcomes.filter((o) => o.deployment).map((o) => o.name);
            firstDeployment = ok[0];
            if (deployExitCode(result) === 0) lines.push(`  deployed ${result.project.displayName}: ${ok.join(', ')}`);
            else {
              lines.push(`  deploy   ${s.red(`${result.project.displayName}: ${result.outcomes.length - ok.length} failed`)}`);
              for (const l of formatDeployOutcomes(result, c)) lines.push(`           ${l}`);
            }
          } catch (e) {
            lines.push(
              `  deploy   ${s.red('failed')}; fix the file, then run: tessera deploy --file ${opts.deploy}${server.url === 'http://127.0.0.1:4200' ? '' : ` --api-url ${server.url}`}`,
            );
            for (const l of formatError(e, s, c.debug).split('\n')) lines.push(`           ${l}`);
          }
        }
        const api = server.url === 'http://127.0.0.1:4200' ? '' : ` --api-url ${server.url}`;
        const next = [
          firstDeployment ? `tessera deployments run ${firstDeployment} --watch${api}` : `tessera deploy${api}`,
          `tessera runs ls${api}`,
          `open ${server.url}/docs`,
        ];
        lines.push(`  next:    ${next.join(s.dim('   ·   '))}`);
        if (api) lines.push(s.dim(`           (or export TESSERA_API_URL=${server.url})`));
        lines.push(s.dim('  Ctrl+C to stop'));
        c.out(lines.join('\n'));

        await worker.start();
      } catch (e) {
        await worker?.stop({ timeoutMs: 0 }).catch(() => {});
        await server.close();
        throw e;
      }
      const w = worker;
      await stopOnSignals(c, () => w.stop({ timeoutMs: '10s' }));
      await server.close();
      c.err(s.dim('tessera dev stopped'));
    });
}
