import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { registerAuditCommand } from './commands/audit.js';
import { registerDeployCommand } from './commands/deploy.js';
import { registerDeploymentCommands } from './commands/deployments.js';
import { registerDevCommand } from './commands/dev.js';
import { registerFederationCommands } from './commands/federation.js';
import { registerKeyCommands } from './commands/keys.js';
import { registerLoginCommands } from './commands/login.js';
import { registerPoolCommands } from './commands/pools.js';
import { registerRunCommand } from './commands/run.js';
import { registerRunCommands } from './commands/runs.js';
import { registerServerCommands } from './commands/server.js';
import { registerTokenCommands } from './commands/token.js';
import { registerTrustCommands } from './commands/trust.js';
import { registerWorkerCommands } from './commands/worker.js';
import { registerWorkersCommands } from './commands/workers.js';
import { CliContext, type GlobalOptions } from './context.js';
import { EXIT, exitCodeFor, formatError } from './lib/exit.js';
import { type CliIo, processIo } from './lib/io.js';
import { createStyle, shouldColor } from './lib/style.js';

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

/**
 * Builds the `tessera` command tree. `ctx()` gives the context of the current invocation (global
 * options parsed); `setExitCode` lets a command succeed in running yet report a failed run.
 */
export function buildProgram(io: CliIo, state: { exitCode: number; context?: CliContext }): Command {
  const program = new Command('tessera');
  const ctx = () => {
    state.context ??= new CliContext(io, program.opts<GlobalOptions>());
    return state.context;
  };
  const setExitCode = (code: number) => {
    state.exitCode = code;
  };
  program
    .description('Tessera: TypeScript workflows where every run carries its own OIDC identity')
    .version(version(), '-v, --version')
    .addOption(new Option('--api-url <url>', 'Tessera server (env TESSERA_API_URL; default http://127.0.0.1:4200)'))
    .option('--debug', 'print stack traces and causes of errors')
    .option('--no-color', 'no colours (also with NO_COLOR or when not a terminal)')
    .showSuggestionAfterError(true)
    .configureHelp({ sortSubcommands: false, showGlobalOptions: true })
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: (s, write) => {
        const style = createStyle({ color: shouldColor(io.stderr, io.env, undefined) });
        write(`${style.red(style.bold('error'))} ${style.bold('ERR_VALIDATION')}: ${s.replace(/^error: /, '')}`);
      },
    })
    .showHelpAfterError('(add --help for usage and examples)')
    .addHelpText(
      'after',
      `
Getting started:
  $ tessera dev --deploy tessera.yaml          # local server + worker, deploys your flows
  $ tessera deployments run hello --watch      # start a run and follow it
  $ tessera runs show 7f3c                     # what happened, and why
  $ tessera login                              # on a shared server: log in through your identity provider

Exit status: 0 ok · 1 failed (or the run did not complete) · 2 usage or config error · 3 server unreachable
Environment: TESSERA_API_URL, TESSERA_HOME, TESSERA_HOST, TESSERA_PORT, TESSERA_DATABASE_URL, TESSERA_PUBLIC_URL, TESSERA_KEY_FILE, TESSERA_TLS_CERT, TESSERA_TLS_KEY, TESSERA_TRUST_PROXY, TESSERA_FEDERATED_TOKEN_FILE, TESSERA_JOIN_TOKEN, TESSERA_AUTH_<PROVIDER>_CLIENT_SECRET, NO_COLOR`,
    );

  registerDevCommand(program, ctx);
  registerServerCommands(program, ctx);
  registerLoginCommands(program, ctx);
  registerWorkerCommands(program, ctx);
  registerPoolCommands(program, ctx);
  registerDeployCommand(program, ctx, setExitCode);
  registerDeploymentCommands(program, ctx, setExitCode);
  registerRunCommand(program, ctx, setExitCode);
  registerRunCommands(program, ctx);
  registerKeyCommands(program, ctx);
  registerTokenCommands(program, ctx, setExitCode);
  registerTrustCommands(program, ctx, setExitCode);
  registerFederationCommands(program, ctx);
  registerWorkersCommands(program, ctx);
  registerAuditCommand(program, ctx);

  // Every command reports usage errors the same way and never exits by itself.
  const configure = (cmd: Command) => {
    cmd.exitOverride();
    cmd.showHelpAfterError('(add --help for usage and examples)');
    for (const sub of cmd.commands) configure(sub);
  };
  configure(program);
  return program;
}

/**
 * Runs the `tessera` command with `argv` (as `process.argv`: node, script, args…) and resolves to
 * the exit status: 0 ok, 1 failure (or a followed run that did not complete), 2 usage or
 * configuration error, 3 server unreachable. Errors are printed as `error CODE: message`; stacks
 * only with `--debug`.
 */
export async function main(argv: readonly string[] = process.argv, io: CliIo = processIo()): Promise<number> {
  const state: { exitCode: number; context?: CliContext } = { exitCode: EXIT.ok };
  const program = buildProgram(io, state);
  try {
    await program.parseAsync([...argv]);
    return state.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit 0; every other commander error is a usage error.
      return e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? EXIT.ok : EXIT.usage;
    }
    const debug = argv.includes('--debug');
    const style =
      state.context?.errStyle ?? createStyle({ color: shouldColor(io.stderr, io.env, argv.includes('--no-color') ? false : undefined) });
    io.stderr.write(`${formatError(e, style, debug)}\n`);
    return exitCodeFor(e);
  }
}
