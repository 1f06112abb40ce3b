import { resolve } from 'node:path';
import { parseDuration, TesseraError } from '@tessera/core';
import type { KeySettingsOptions } from '@tessera/server';
import type { Command } from 'commander';
import type { ConfigFlags } from '../config.js';
import type { CliContext } from '../context.js';
import { createPrettyLogStream } from '../lib/log-stream.js';
import { examples, parsePort } from '../lib/options.js';
import { waitForShutdownSignal } from '../lib/signals.js';

/** Options shared by `server start` and `dev`. */
export interface ServerFlags {
  host?: string;
  port?: number;
  home?: string;
  databaseUrl?: string;
  publicUrl?: string;
  /** `--internal-url`, repeatable (commander names it after the flag). */
  internalUrl?: string[];
  logLevel?: string;
  /** PEM certificate and key: serve HTTPS (env TESSERA_TLS_CERT, TESSERA_TLS_KEY). */
  tlsCert?: string;
  tlsKey?: string;
  /** Private signing keys persisted here, mode 0600 (env TESSERA_KEY_FILE). */
  keyFile?: string;
  /** Key rotation (env TESSERA_KEY_PRE_PUBLISH, TESSERA_KEY_ROTATION_INTERVAL); durations like `10m`, `30d`. */
  keyPrePublish?: string;
  /** See KeySettingsOptions.startPublish (env TESSERA_KEY_START_PUBLISH). */
  keyStartPublish?: string;
  keyRotationInterval?: string;
}

/** Adds the server's flags to a command. */
export function addServerOptions(cmd: Command, defaults: { portHelp?: string } = {}): Command {
  return cmd
    .option('--host <host>', 'address to listen on (env TESSERA_HOST; loopback only in local mode)')
    .option(
      '--port <port>',
      `port to listen on, 0 for a free one (env TESSERA_PORT)${defaults.portHelp ? `; ${defaults.portHelp}` : ''}`,
      parsePort,
    )
    .option('--home <dir>', 'data directory (env TESSERA_HOME; default ~/.tessera)')
    .option('--database-url <url>', 'postgres://… or a SQLite file (env TESSERA_DATABASE_URL; default <home>/tessera.db)')
    .option('--public-url <url>', 'the issuer URL as relying parties reach it (env TESSERA_PUBLIC_URL)')
    .option(
      '--internal-url <url>',
      'another URL clients reach this server at directly, e.g. a cluster service name; accepted in DPoP proofs; repeatable (env TESSERA_INTERNAL_URLS, comma-separated)',
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option('--log-level <level>', 'trace, debug, info, warn, error (env TESSERA_LOG_LEVEL)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (env TESSERA_TLS_CERT; needs --tls-key)')
    .option('--tls-key <file>', 'private key of --tls-cert, PEM (env TESSERA_TLS_KEY)')
    .option('--key-file <file>', 'keep private signing keys in this file, mode 0600, so they survive restarts (env TESSERA_KEY_FILE)')
    .option('--key-pre-publish <duration>', 'how long a new key is published before it signs (env TESSERA_KEY_PRE_PUBLISH; default 10m)')
    .option(
      '--key-start-publish <duration>',
      'how long a key made at start (no --key-file, or a new replica) is published before it signs; 0 signs at once (env TESSERA_KEY_START_PUBLISH; default 5m)',
    )
    .option(
      '--key-rotation-interval <duration>',
      'rotate signing keys this often, 0 for never (env TESSERA_KEY_ROTATION_INTERVAL; default 30d)',
    );
}

/**
 * `--key-file`, `--key-*` and `--tls-*`: flags over `TESSERA_KEY_FILE`, `TESSERA_KEY_PRE_PUBLISH`,
 * `TESSERA_KEY_START_PUBLISH`, `TESSERA_KEY_ROTATION_INTERVAL`, `TESSERA_TLS_CERT`, `TESSERA_TLS_KEY`; paths relative to the working directory.
 */
export function resolveKeyAndTlsOptions(
  flags: ServerFlags,
  env: NodeJS.ProcessEnv,
  cwd: string,
): { keyFile?: string; tls?: { cert: string; key: string }; keys?: KeySettingsOptions } {
  const pick = (flag: string | undefined, name: string) => flag ?? (env[name] ? env[name] : undefined);
  const keyFile = pick(flags.keyFile, 'TESSERA_KEY_FILE');
  const cert = pick(flags.tlsCert, 'TESSERA_TLS_CERT');
  const key = pick(flags.tlsKey, 'TESSERA_TLS_KEY');
  const prePublish = pick(flags.keyPrePublish, 'TESSERA_KEY_PRE_PUBLISH');
  const startPublish = pick(flags.keyStartPublish, 'TESSERA_KEY_START_PUBLISH');
  const rotationInterval = pick(flags.keyRotationInterval, 'TESSERA_KEY_ROTATION_INTERVAL');
  const keys: KeySettingsOptions = {
    ...(prePublish !== undefined ? { prePublish: parseDuration(prePublish, '--key-pre-publish') } : {}),
    ...(startPublish !== undefined ? { startPublish: parseDuration(startPublish, '--key-start-publish') } : {}),
    ...(rotationInterval !== undefined ? { rotationInterval: parseDuration(rotationInterval, '--key-rotation-interval') } : {}),
  };
  if ((cert === undefined) !== (key === undefined)) {
    throw new TesseraError(
      'ERR_CONFIG',
      `HTTPS needs both a certificate and its key: ${cert === undefined ? '--tls-cert (TESSERA_TLS_CERT) is missing' : '--tls-key (TESSERA_TLS_KEY) is missing'}`,
    );
  }
  return {
    ...(keyFile ? { keyFile: resolve(cwd, keyFile) } : {}),
    ...(cert && key ? { tls: { cert: resolve(cwd, cert), key: resolve(cwd, key) } } : {}),
    ...(Object.keys(keys).length > 0 ? { keys } : {}),
  };
}

/** The server flags as configuration flags (commander names a repeatable `--internal-url` `internalUrl`). */
export function configFlagsOf(flags: ServerFlags): ConfigFlags {
  const { internalUrl, ...rest } = flags;
  return { ...rest, ...(internalUrl ? { internalUrls: internalUrl } : {}) } as ConfigFlags;
}

/**
 * Starts a server from the resolved configuration; logs go to stderr, readable. With `localMode`
 * (`tessera dev`) the config file's `auth:` section is ignored: a single local admin on loopback.
 */
export async function startConfiguredServer(c: CliContext, flags: ServerFlags, defaults: { logLevel: string; localMode?: boolean }) {
  const config = c.config(configFlagsOf(flags));
  const { startServer } = await import('@tessera/server');
  const server = await startServer({
    home: config.home,
    ...(config.databaseUrl !== undefined ? { databaseUrl: config.databaseUrl } : {}),
    ...(config.host !== undefined ? { host: config.host } : {}),
    ...(config.port !== undefined ? { port: config.port } : {}),
    ...(config.publicUrl !== undefined ? { publicUrl: config.publicUrl } : {}),
    ...(config.internalUrls !== undefined ? { internalUrls: config.internalUrls } : {}),
    logLevel: config.logLevel ?? defaults.logLevel,
    ...resolveKeyAndTlsOptions(flags, c.io.env, c.io.cwd),
    ...(config.auth !== undefined && !defaults.localMode ? { auth: config.auth } : {}),
    ...(config.trustProxy !== undefined ? { trustProxy: config.trustProxy } : {}),
    logStream: createPrettyLogStream(c.io.stderr, { style: c.errStyle, timeZone: c.timeZone, source: 'server' }),
  });
  return { server, config };
}

/** `tessera server start`. */
export function registerServerCommands(program: Command, ctx: () => CliContext): void {
  const server = program.command('server').description('run the Tessera server (API, scheduler, OIDC issuer)');
  addServerOptions(
    server
      .command('start')
      .description('start the server in the foreground; Ctrl+C stops it gracefully')
      .addHelpText(
        'after',
        `
Settings: flags > environment (TESSERA_*) > tessera.config.yaml or $TESSERA_HOME/config.yaml > defaults.
${examples(['tessera server start'], ['tessera server start --port 4300 --home ./.tessera'], ['TESSERA_DATABASE_URL=postgres://localhost/tessera tessera server start'])}`,
      ),
  ).action(async (opts: ServerFlags) => {
    const c = ctx();
    const { server: running, config } = await startConfiguredServer(c, opts, { logLevel: 'info' });
    const s = c.style;
    c.out(`${s.bold('tessera server')}  ${s.bold(running.url)}`);
    c.out(`  API docs  ${running.url}/docs`);
    c.out(`  issuer    ${running.issuer}/.well-known/openid-configuration`);
    c.out(`  data      ${config.databaseUrl ?? config.home}`);
    c.out(loginLine(running, s));
    c.out(s.dim('  Ctrl+C to stop'));
    const signal = await waitForShutdownSignal();
    c.err(s.dim(`${signal}: stopping the server…`));
    await running.close();
    c.err(s.dim('server stopped'));
  });
}

/** The banner's login line: the providers people log in at, or (loudly) local mode. */
export function loginLine(running: { services: { auth: { localAdmin: boolean } }; url: string }, s: CliContext['style']): string {
  if (running.services.auth.localAdmin) {
    return s.yellow(
      '  mode      LOCAL MODE: single local admin, loopback only (anyone who can reach this port is admin); configure auth.providers in tessera.config.yaml to let people log in',
    );
  }
  return `  login     ${running.url}/auth/login · tessera login --api-url ${running.url}`;
}
