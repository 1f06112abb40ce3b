import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { TesseraError, withoutUserinfo } from '@tessera/core';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { buildApp } from './app.js';
import { configureLogin, type LoginService } from './auth/oidc-login.js';
import { type AuthOptions, configureAuth, isLocalMode } from './auth/options.js';
import { type Clock, systemClock } from './lib/clock.js';
import { DEFAULT_SETTINGS, type OrchestrationSettings, type ServiceContext } from './services/context.js';
import { Wakeups } from './services/events.js';
import { Services } from './services/index.js';
import { JWKS_MAX_AGE_MS, type KeySettingsOptions } from './services/keys.js';
import { generateReplicaId, ReplicaRegistry } from './services/replicas.js';
import { SINGLETON_LOCK_ID, Singleton } from './services/singleton.js';
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
  /**
   * Other base URLs clients reach this server at without going through `publicUrl`: a cluster-internal
   * service name workers use (`http://tessera.tessera.svc:4200`), a private load balancer. A DPoP proof
   * may name them as its `htu`, as it may the issuer and the listen address. They never appear in
   * tokens or in discovery. Each: http(s), no path, query or credentials. @default none
   */
  internalUrls?: string[];
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
  /** Local mode, access-token lifetime, trust policies declared in configuration (docs/security.md); identity providers people log in at and session lifetimes (docs/login.md). */
  auth?: AuthOptions;
  /**
   * Behind a reverse proxy: trust its `X-Forwarded-Proto`/`-For` headers (Fastify `trustProxy`:
   * `true`, or the proxies' addresses/CIDRs). Session cookies are `Secure` when the proxy says https.
   * @default false
   */
  trustProxy?: boolean | string | string[];
  /**
   * This replica's id among the servers sharing a PostgreSQL database; must be unique among them. A
   * stable id (a pod name) lets a restarted replica retire its previous keys at once instead of
   * after `replicaTimeoutMs` (docs/operations.md). @default $TESSERA_REPLICA_ID, else host name + random suffix
   */
  replicaId?: string;
  /**
   * PostgreSQL connections in this replica's pool; it uses about three more (singleton lease,
   * LISTEN, NOTIFY). @default $TESSERA_DATABASE_POOL_SIZE, else 10
   */
  databasePoolSize?: number;
}

export interface RunningServer {
  /** Base URL of the API. */
  url: string;
  issuer: string;
  app: FastifyInstance;
  services: Services;
  /** This replica's id (see {@link ServerOptions.replicaId}). */
  replicaId: string;
  /**
   * Runs the background loop once, now (tests): this replica's own work, and the singleton services
   * (scheduler, zombie detector, key maintenance) when it holds the singleton lease.
   */
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
  if (!LOOPBACK.has(host) && isLocalMode(options.auth)) {
    throw new TesseraError(
      'ERR_CONFIG',
      `refusing to listen on ${host}: no identity provider is configured, so the server runs in local mode (single local admin, loopback only). Listen on 127.0.0.1, or configure an identity provider.`,
    );
  }
  const internalUrls = (options.internalUrls ?? []).map((u, i) => baseUrl(u, `internalUrls[${i}]`));
  const home = resolveHome(options.home);
  const databaseUrl = options.databaseUrl ?? join(home, 'tessera.db');
  const https = options.tls ? readTls(options.tls) : undefined;
  const poolSize = options.databasePoolSize ?? (Number(process.env.TESSERA_DATABASE_POOL_SIZE) || undefined);
  const store = openStore(databaseUrl, poolSize ? { poolSize } : {});
  try {
    await migrateToLatest(store.db as never, store.dialect);
  } catch (e) {
    await store.destroy();
    throw e;
  }
  const replicaId = options.replicaId ?? process.env.TESSERA_REPLICA_ID ?? generateReplicaId();
  const clock = options.clock ?? systemClock;
  // Until the app (and its logger) exists, problems are thrown, not logged.
  let log: { info(m: string): void; warn(m: string): void } = { info: () => {}, warn: () => {} };
  let databaseTrouble = false;
  const singleton = new Singleton({
    lease: store.createLease({ lockId: SINGLETON_LOCK_ID, holder: replicaId, onError: (e) => noteTrouble(e) }),
    clock,
    onChange: (leader) =>
      log.info(
        leader
          ? `replica ${replicaId} now runs the singleton services (scheduler, zombie detection, key maintenance)`
          : `replica ${replicaId} no longer runs the singleton services`,
      ),
  });
  const ctx: ServiceContext = {
    db: store.db,
    dialect: store.dialect,
    clock,
    wakeups: new Wakeups(),
    settings: { ...DEFAULT_SETTINGS, ...options.settings },
    replica: { id: replicaId, isLeader: () => singleton.isLeader },
  };
  let issuer = options.publicUrl?.replace(/\/+$/, '') ?? '';
  const services = new Services(ctx, () => issuer);
  services.internalUrls = internalUrls;
  const replicas = new ReplicaRegistry(ctx, replicaId);
  /** The database could not be reached: say so once per outage; missed worker heartbeats do not count. */
  function noteTrouble(e: unknown): void {
    services.zombies.resetClock(clock.now());
    if (databaseTrouble) return;
    databaseTrouble = true;
    log.warn(`replica ${replicaId} cannot reach the database (${(e as Error)?.message ?? e}); retrying every loop tick`);
  }
  const databaseReachable = () =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 2_000);
      sql`select 1`
        .execute(store.db)
        .then(
          () => resolve(true),
          () => resolve(false),
        )
        .finally(() => clearTimeout(timer));
    });
  const shutDownStore = async () => {
    await singleton.close().catch(() => {});
    await ctx.wakeups.close().catch(() => {});
    await store.destroy();
  };
  let login: LoginService | undefined;
  try {
    // People's login (auth.providers): validated here, so a bad provider fails the start.
    login = configureLogin(services, options.auth);
    // Local mode, access-token lifetime, trust policies declared in configuration (docs/security.md).
    await configureAuth(services, options.auth);
    await replicas.register();
    // With several replicas, long polls on every replica wake when a run becomes due on any of them.
    const bus = store.createWakeupBus((e) => noteTrouble(e));
    if (bus) await ctx.wakeups.attach(bus);
    // Local mode listens on loopback only, where no relying party elsewhere can have cached its JWKS:
    // a restart's keys sign at once unless `keys.startPublish` says otherwise (docs/keys.md).
    const keys = services.auth.localAdmin && options.keys?.startPublish === undefined ? { ...options.keys, startPublish: 0 } : options.keys;
    await services.keys.start({ ...keys, ...(options.keyFile ? { keyFile: options.keyFile } : {}), replicaId });
  } catch (e) {
    await shutDownStore();
    throw e;
  }
  const app = await buildApp({
    ...(https ? { https } : {}),
    services,
    logLevel: options.logLevel ?? 'info',
    version: version(),
    ...(options.logStream ? { logStream: options.logStream } : {}),
    ...(login ? { login } : {}),
    ...(options.trustProxy !== undefined ? { trustProxy: options.trustProxy } : {}),
  });
  let address: string;
  try {
    address = await app.listen({ host, port: options.port ?? 4200 });
  } catch (e) {
    await services.keys.stop().catch(() => {});
    await shutDownStore();
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
  services.listenUrl = url;
  log = app.log;
  await replicas.setUrl(url).catch((e) => noteTrouble(e));
  if (!issuer && ctx.wakeups.attached) {
    app.log.warn(
      `no public URL is set: tokens name this replica's own address (${url}) as their issuer. With several replicas, set --public-url (TESSERA_PUBLIC_URL) to the address they share, e.g. the load balancer's, so a token from one verifies through any`,
    );
  }
  if (!issuer) issuer = url;
  if (services.auth.localAdmin) {
    // Said loudly: anyone who can reach this address is admin.
    app.log.warn(
      `LOCAL MODE: no identity provider is configured, so every request without a credential acts as the local admin. Listening on ${url} (loopback only). To let people log in, configure auth.providers (docs/login.md).`,
    );
  } else if (login) {
    app.log.info(
      `login: ${login.providers.map((p) => `${p.name} (${p.issuer})`).join(', ')}; register ${login.redirectUri()} as the redirect URI at each provider`,
    );
  }
  const pending = Object.entries(services.keys.pendingAlgorithms());
  if (pending.length > 0) {
    app.log.warn(
      `signing keys made at this start are published now and sign from ${pending.map(([alg, at]) => `${at} (${alg})`).join(', ')}, once relying parties that cached the JWKS can have seen them; until then this replica answers token requests with 503 ERR_KEY_PENDING and Retry-After. ${services.keys.rotationSettings.keyFile ? '' : 'Keep keys across restarts with --key-file (TESSERA_KEY_FILE); '}--key-start-publish 0 signs at once where no relying party caches the JWKS (docs/keys.md)`,
    );
  }
  if (services.keys.rotationSettings.prePublishMs < JWKS_MAX_AGE_MS) {
    app.log.warn(
      `keys.prePublish is ${services.keys.rotationSettings.prePublishMs} ms, shorter than the JWKS cache lifetime (${JWKS_MAX_AGE_MS} ms): relying parties may see a token from a new key before they see the key`,
    );
  }

  let ticks = 0;
  const tick = async () => {
    try {
      await replicas.heartbeat();
      if (await singleton.check()) {
        await services.scheduler.tick();
        await services.zombies.tick();
        await services.keys.maintain(singleton.leaderSince ?? clock.now());
        if (ticks++ % 1000 === 0) await replicas.prune();
      }
      await services.keys.tick();
    } catch (e) {
      // A failure because the database is gone is an outage (logged once, retried every tick);
      // any other failure is a bug, reported as such.
      if (await databaseReachable()) throw e;
      noteTrouble(e);
      return;
    }
    if (databaseTrouble) {
      databaseTrouble = false;
      app.log.info(`replica ${replicaId} reaches the database again`);
    }
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
    replicaId,
    tick,
    async close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
      await app.close();
      await services.tokens.close();
      // Hand the singleton services over at once rather than when this connection is missed.
      await singleton.close();
      await services.keys.stop().catch((e) => app.log.error({ err: e }, 'could not retire the signing keys'));
      await replicas.stop().catch(() => {});
      await shutDownStore();
    },
  };
}

/**
 * A base URL as an endpoint URL's prefix: http(s), nothing after the authority but an optional `/`.
 * @throws TesseraError `ERR_CONFIG` naming `field`.
 */
export function baseUrl(value: string, field: string): string {
  const shown = JSON.stringify(withoutUserinfo(value));
  if (value.includes('@')) throw new TesseraError('ERR_CONFIG', `${field}: ${shown}: a URL with credentials is not allowed`);
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new TesseraError('ERR_CONFIG', `${field}: ${shown} is not a URL; e.g. http://tessera.tessera.svc:4200`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new TesseraError('ERR_CONFIG', `${field}: ${shown} must be an http or https URL`);
  if (u.pathname !== '/' || u.search || u.hash)
    throw new TesseraError(
      'ERR_CONFIG',
      `${field}: ${shown} must be a base URL with no path, query or fragment, e.g. ${u.protocol}//${u.host}`,
    );
  return `${u.protocol}//${u.host}`;
}
