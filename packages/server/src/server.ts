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
import { JWKS_MAX_AGE_MS, type KeySettingsOptions } from './services/keys.js';
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
  /**
   * Serve HTTPS with this certificate and private key (PEM file paths). The issuer then defaults to
   * `https://<host>:<port>`. Behind a TLS-terminating proxy, leave this out and set `publicUrl`.
   */
  tls?: { cert: string; key: string };
  /**
   * Keep the private signing keys in this file (a private JWK Set, mode 0600) so the same keys sign
   * after a restart; single node only. Refused when group or others may read it. Without it, keys
   * live in memory and a restart makes new ones. @default none
   */
  keyFile?: string;
  /** Key rotation: pre-publication delay, scheduled rotation interval, expiry leeway (docs/keys.md). */
  keys?: KeySettingsOptions;
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

/** Reads the TLS certificate and key, with an error that names the file and the flag. */
function readTls(tls: { cert: string; key: string }): { cert: Buffer; key: Buffer } {
  const read = (path: string, what: string, flag: string) => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new TesseraError(
        'ERR_CONFIG',
        `cannot read the TLS ${what} ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); check ${flag}`,
        {
          cause: e,
        },
      );
    }
  };
  return { cert: read(tls.cert, 'certificate', '--tls-cert'), key: read(tls.key, 'private key', '--tls-key') };
}

/**
 * Starts a Tessera server: opens and migrates the database, loads or generates the signing keys and
 * publishes them, serves the API (over HTTPS with `tls`), and runs the scheduler, the zombie detector
 * and key rotation.
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
  const https = options.tls ? readTls(options.tls) : undefined;
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
  try {
    await services.keys.start({ ...options.keys, ...(options.keyFile ? { keyFile: options.keyFile } : {}) });
  } catch (e) {
    await store.db.destroy();
    throw e;
  }
  const app = await buildApp({
    ...(https ? { https } : {}),
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
  if (services.keys.rotationSettings.prePublishMs < JWKS_MAX_AGE_MS) {
    app.log.warn(
      `keys.prePublish is ${services.keys.rotationSettings.prePublishMs} ms, shorter than the JWKS cache lifetime (${JWKS_MAX_AGE_MS} ms): relying parties may see a token from a new key before they see the key`,
    );
  }

  const tick = async () => {
    await services.scheduler.tick();
    await services.zombies.tick();
    await services.keys.tick();
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
      await services.keys.stop().catch((e) => app.log.error({ err: e }, 'could not retire the signing keys'));
      await store.db.destroy();
    },
  };
}
