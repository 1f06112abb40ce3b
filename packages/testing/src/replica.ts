import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { ServerOptions } from '@tessera/server';
import { REPO_ROOT } from './project.js';
import { TEST_SETTINGS } from './server.js';

/** The built entry of a replica process (`npm run build` builds it). */
export const REPLICA_MAIN = join(REPO_ROOT, 'packages/testing/dist/replica-main.js');

/** Options for {@link startReplica}: JSON-serialisable server options (no clock, no log stream). */
export type ReplicaOptions = Omit<ServerOptions, 'clock' | 'logStream'> & { databaseUrl: string };

/** A server replica running in its own process. */
export interface ReplicaProcess {
  url: string;
  replicaId: string;
  pid: number;
  child: ChildProcess;
  /** Everything it logged (stderr, pino JSON lines), last 200 kB. */
  output(): string;
  /** Resolves with the exit code (or null after a signal). */
  exited: Promise<number | null>;
  /** Sends `signal` (SIGTERM: clean shutdown; SIGKILL: a crash) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** GET /readyz: the HTTP status, or 0 when the replica does not answer. */
  ready(): Promise<{ status: number; body: Record<string, unknown> | undefined }>;
}

/**
 * Starts a Tessera server replica as a child process on 127.0.0.1 (ephemeral port) over
 * `databaseUrl`, with the fast test timings unless `settings` say otherwise. Several replicas on
 * one PostgreSQL database form a cluster; give them the same `publicUrl` (e.g. a {@link startTcpProxy}
 * load balancer) so their tokens name one issuer. Needs `npm run build`.
 */
export async function startReplica(options: ReplicaOptions, timeoutMs = 30_000): Promise<ReplicaProcess> {
  const child = spawn(process.execPath, [REPLICA_MAIN], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      TESSERA_REPLICA_OPTIONS: JSON.stringify({
        port: 0,
        logLevel: 'info',
        ...options,
        settings: { ...TEST_SETTINGS, ...options.settings },
      }),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err = (err + d).slice(-200_000);
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const info = await new Promise<{ url: string; replicaId: string; pid: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`replica did not start in ${timeoutMs} ms:\n${err.slice(-4000)}`)), timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line && out.includes('\n')) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as { url: string; replicaId: string; pid: number });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`replica exited with ${code} before it listened:\n${err.slice(-4000)}`));
    });
  });
  return {
    ...info,
    child,
    output: () => err,
    exited,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    async ready() {
      try {
        const res = await fetch(`${info.url}/readyz`, { signal: AbortSignal.timeout(5_000) });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      } catch {
        return { status: 0, body: undefined };
      }
    },
  };
}
