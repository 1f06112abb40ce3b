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
  logLevel?: string;
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
    .option('--log-level <level>', 'trace, debug, info, warn, error (env TESSERA_LOG_LEVEL)');
}

/** Starts a server from the resolved configuration; logs go to stderr, readable. */
export async function startConfiguredServer(c: CliContext, flags: ServerFlags, defaults: { logLevel: string }) {
  const config = c.config(flags as ConfigFlags);
  const { startServer } = await import('@tessera/server');
  const server = await startServer({
    home: config.home,
    ...(config.databaseUrl !== undefined ? { databaseUrl: config.databaseUrl } : {}),
    ...(config.host !== undefined ? { host: config.host } : {}),
    ...(config.port !== undefined ? { port: config.port } : {}),
    ...(config.publicUrl !== undefined ? { publicUrl: config.publicUrl } : {}),
    logLevel: config.logLevel ?? defaults.logLevel,
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
    c.out(s.dim('  Ctrl+C to stop'));
    const signal = await waitForShutdownSignal();
    c.err(s.dim(`${signal}: stopping the server…`));
    await running.close();
    c.err(s.dim('server stopped'));
  });
}
