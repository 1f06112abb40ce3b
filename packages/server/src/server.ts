import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { TesseraError } from '@tessera/core';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './app.js';
import { type Clock, systemClock } from './lib/clock.js';
import { DEFAULT_SETTINGS, type OrchestrationSettings, type ServiceContext } from './services/context.js';
import { Wakeups } from './services/events.js';
import { Services } from './services/index.js';
import { DEFAULT_MAX_TOKEN_LIFETIME_MS } from './services/tokens.js';
import { openStore } from './store/dialect.js';
import { migrateToLatest } from './store/migrate.js';

/** Options for {@link startServer}. */
export interface ServerOptions {
  /** Data directory. @default $TESSERA_HOME or ~/.tessera */
  home?: string;
  /** `postgres://…` or a SQLite file path. @default `<home>/tessera.db` */
  databaseUrl?: string;
  /** @default '127.0.0.1' */
  host?: string;
  /** @default 4200; 0 picks a free port */
  port?: number;
  /** The issuer URL as relying parties reach it (behind a proxy). @default `http://<host>:<port>` */
  publicUrl?: string;
  /** @default 'info' */
  logLevel?: string;
  /** Where log lines go. @default stdout */
  logStream?: NodeJS.WritableStream;
  /** Orchestration timings (heartbeat timeout, loop interval…), ms. */
  settings?: Partial<OrchestrationSettings>;
  /** Replace the clock (tests). */
  clock?: Clock;
  /** Run the scheduler and zombie detector loops. @default true */
  backgroundServices?: boolean;
}

export interface RunningServer {
  /** Base URL of the API. */
  url: string;
  issuer: string;
  app: FastifyInstance;
  services: Services;
  /** Runs the scheduler and zombie detector once, now (tests). */
  tick(): Promise<void>;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

/** Resolves the data directory: option, then $TESSERA_HOME, then ~/.tessera. */
export function resolveHome(home?: string): string {
  return home ?? process.env.TESSERA_HOME ?? join(homedir(), '.tessera');
}

/**
 * Starts a Tessera server: opens and migrates the database, generates a signing key and publishes
 * it, serves the API, and runs the scheduler and zombie detector.
 */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const host = options.host ?? '127.0.0.1';
  if (!LOOPBACK.has(host)) {
    throw new TesseraError(
      'ERR_CONFIG',
      `refusing to listen on ${host}: no identity provider is configured, so the server runs in local mode (single local admin, loopback only). Listen on 127.0.0.1, or configure an identity provider.`,
    );
  }
  const home = resolveHome(options.home);
  const databaseUrl = options.databaseUrl ?? join(home, 'tessera.db');
  const store = openStore(databaseUrl);
  await migrateToLatest(store.db as never, store.dialect);
  const ctx: ServiceContext = {
    db: store.db,
    dialect: store.dialect,
    clock: options.clock ?? systemClock,
    wakeups: new Wakeups(),
    settings: { ...DEFAULT_SETTINGS, ...options.settings },
  };
  let issuer = options.publicUrl?.replace(/\/+$/, '') ?? '';
  const services = new Services(ctx, () => issuer);
  await services.keys.start();
  const app = await buildApp({
    services,
    logLevel: options.logLevel ?? 'info',
    version: version(),
    ...(options.logStream ? { logStream: options.logStream } : {}),
  });
  let address: string;
  try {
    address = await app.listen({ host, port: options.port ?? 4200 });
  } catch (e) {
    await store.db.destroy();
    const code = (e as { code?: string }).code;
    if (code === 'EADDRINUSE') {
      throw new TesseraError(
        'ERR_CONFIG',
        `port ${options.port ?? 4200} on ${host} is already in use; is another Tessera server running? Pick another with --port`,
        { cause: e },
      );
    }
    throw e;
  }
  const url = address.replace('[::1]', '[::1]');
  if (!issuer) issuer = url;

  const tick = async () => {
    await services.scheduler.tick();
    await services.zombies.tick();
  };
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  if (options.backgroundServices !== false) {
    const loop = () => {
      if (stopped) return;
      running = tick()
        .catch((e) => app.log.error({ err: e }, 'background services failed; retrying'))
        .finally(() => {
          if (!stopped) timer = setTimeout(loop, ctx.settings.loopIntervalMs);
        });
    };
    loop();
  }

  return {
    url,
    issuer,
    app,
    services,
    tick,
    async close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
      await app.close();
      await services.keys.retire(DEFAULT_MAX_TOKEN_LIFETIME_MS).catch(() => {});
      await store.db.destroy();
    },
  };
}
