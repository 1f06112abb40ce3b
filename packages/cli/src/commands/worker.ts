import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import type { OutputStream } from '../lib/io.js';
import { examples, parseIntOption } from '../lib/options.js';
import type { Style } from '../lib/style.js';
import { formatTime, zoneName } from '../lib/time.js';

/** A worker logger printing `12:00:01 CET  INFO   worker  message` lines. */
export function createWorkerLogger(out: OutputStream, options: { style: Style; timeZone: string }) {
  const line = (level: 'INFO' | 'WARN' | 'ERROR', message: string) => {
    const now = new Date();
    const { style, timeZone } = options;
    const lvl = level === 'ERROR' ? style.red(level.padEnd(5)) : level === 'WARN' ? style.yellow(level.padEnd(5)) : level.padEnd(5);
    out.write(`${style.dim(`${formatTime(now, timeZone)} ${zoneName(timeZone, now)}`)}  ${lvl}  ${style.dim('worker')}  ${message}\n`);
  };
  return {
    info: (m: string) => line('INFO', m),
    warn: (m: string) => line('WARN', m),
    error: (m: string) => line('ERROR', m),
  };
}

/** Options of `worker start`. */
export interface WorkerFlags {
  pool: string;
  concurrency?: number;
  name?: string;
  pollWait?: string;
  cancelGrace?: string;
  joinToken?: string;
  federatedTokenFile?: string;
  identityFile?: string;
}

/** `tessera worker start`. */
export function registerWorkerCommands(program: Command, ctx: () => CliContext): void {
  const worker = program.command('worker').description('run a worker that executes the runs of a work pool');
  worker
    .command('start')
    .description('start a worker in the foreground; Ctrl+C stops claiming and waits for running runs, a second Ctrl+C stops them')
    .requiredOption('--pool <name>', 'work pool to claim runs from')
    .option('--concurrency <n>', 'most flow runs at once', parseIntOption('--concurrency', 1), 8)
    .option('--name <name>', 'worker name shown on runs (default: <hostname>-<pid>)')
    .option('--poll-wait <duration>', 'longest the server may hold a poll open, e.g. 10s')
    .option('--cancel-grace <duration>', 'after SIGTERM, how long a cancelled flow process gets before SIGKILL (default 10s)')
    .option(
      '--join-token <token>',
      'single-use join token from `tessera workers join-token` (env TESSERA_JOIN_TOKEN, which keeps it out of `ps`)',
    )
    .option(
      '--federated-token-file <path>',
      'platform token file exchanged under a worker trust policy, e.g. a Kubernetes projected token (env TESSERA_FEDERATED_TOKEN_FILE)',
    )
    .option('--identity-file <path>', "keep the worker's id and private key here (mode 0600) so a restart needs no new join token")
    .addHelpText(
      'after',
      examples(
        ['tessera worker start --pool default'],
        ['tessera worker start --pool gpu --concurrency 2 --name gpu-1'],
        ['TESSERA_API_URL=http://tessera.internal:4200 tessera worker start --pool default'],
        ['TESSERA_JOIN_TOKEN=tsj_… tessera worker start --pool default --identity-file ~/.tessera/worker.json'],
        ['tessera worker start --pool k8s --federated-token-file /var/run/secrets/tessera/token'],
      ),
    )
    .action(async (opts: WorkerFlags) => {
      const c = ctx();
      const config = c.config();
      const { createWorker } = await import('@tessera/worker');
      const w = createWorker({
        apiUrl: config.apiUrl,
        pool: opts.pool,
        concurrency: opts.concurrency ?? 8,
        ...(opts.name !== undefined ? { name: opts.name } : {}),
        ...(opts.pollWait !== undefined ? { pollWaitMs: opts.pollWait } : {}),
        ...(opts.cancelGrace !== undefined ? { cancelGraceMs: opts.cancelGrace } : {}),
        ...workerAuth(opts, c.io.env),
        logger: createWorkerLogger(c.io.stderr, { style: c.errStyle, timeZone: c.timeZone }),
      });
      await w.start();
      await Promise.race([stopOnSignals(c, () => w.stop()), w.whenStopped()]);
      // Stopped by itself: it could not authenticate (revoked, join token spent or expired).
      if (w.fatalError) throw w.fatalError;
    });
}

/**
 * Resolves once `stop` has finished after SIGINT/SIGTERM. A second signal calls `stop` again
 * (the worker then stops its running flows); a third exits at once.
 */
export function stopOnSignals(c: CliContext, stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    let count = 0;
    const handler = (signal: NodeJS.Signals) => {
      count++;
      if (count === 1) c.err(c.errStyle.dim(`${signal}: stopping; waiting for running runs (Ctrl+C again to stop them now)…`));
      else if (count === 2) c.err(c.errStyle.yellow('stopping running runs…'));
      else process.exit(130);
      stop().then(
        () => {
          process.off('SIGINT', handler);
          process.off('SIGTERM', handler);
          resolve();
        },
        (e: unknown) => reject(e),
      );
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}

/** How the worker authenticates: flags win over TESSERA_JOIN_TOKEN / TESSERA_FEDERATED_TOKEN_FILE; neither is local mode. */
export function workerAuth(
  opts: Pick<WorkerFlags, 'joinToken' | 'federatedTokenFile' | 'identityFile'>,
  env: NodeJS.ProcessEnv,
): { joinToken?: string; federatedTokenFile?: string; identityFile?: string } {
  const joinToken = opts.joinToken ?? (env.TESSERA_JOIN_TOKEN || undefined);
  const federatedTokenFile = opts.federatedTokenFile ?? (opts.joinToken ? undefined : env.TESSERA_FEDERATED_TOKEN_FILE || undefined);
  return {
    ...(joinToken ? { joinToken } : {}),
    ...(federatedTokenFile && !joinToken ? { federatedTokenFile } : {}),
    ...(opts.identityFile ? { identityFile: opts.identityFile } : {}),
  };
}
