import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { formatDeploymentsTable } from '../format/resources.js';
import { formatState, shortId } from '../format/states.js';
import { followRun } from '../lib/follow.js';
import { examples } from '../lib/options.js';
import { buildParameters, collect } from '../lib/params.js';
import { exitForRun, runSummaryLine, watchRun } from './runs.js';

/** `tessera deployments …`: list deployments and start their runs. */
export function registerDeploymentCommands(program: Command, ctx: () => CliContext, setExitCode: (code: number) => void): void {
  const deployments = program
    .command('deployments')
    .alias('deployment')
    .description('list deployments and start runs of them (create them with `tessera deploy`)')
    .addHelpText('after', examples(['tessera deployments ls'], ['tessera deployments run nightly-etl --param day=2026-11-28 --watch']));

  deployments
    .command('ls')
    .alias('list')
    .description('list deployments')
    .option('--json', 'print JSON')
    .addHelpText('after', examples(['tessera deployments ls'], ['tessera deployments ls --json | jq -r ".[].name"']))
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      const { items } = await c.client().listDeployments();
      if (opts.json) return c.json(items);
      c.out(formatDeploymentsTable(items, { style: c.style, now: new Date() }));
    });

  deployments
    .command('run')
    .description("start a run of a deployment now; a worker of the deployment's pool executes it")
    .argument('<name>', 'deployment name')
    .option('-p, --param <key=value>', 'a parameter; the value is JSON when it parses, else a string (repeatable)', collect)
    .option('--params-json <json>', 'all parameters as one JSON object (--param values win)')
    .option('--idempotency-key <key>', 'a second request with the same key returns the first run instead of starting another')
    .option('-w, --watch', 'follow the run until it ends, printing each state change; exit 1 unless it completed')
    .option('--json', 'print the run as JSON (with --watch: the final run)')
    .addHelpText(
      'after',
      examples(
        ['tessera deployments run hello'],
        ['tessera deployments run nightly-etl --param day=2026-11-28 --param limit=100 --watch'],
        [`tessera deployments run report --params-json '{"to":["ana@example.com"]}'`],
      ),
    )
    .action(
      async (name: string, opts: { param?: string[]; paramsJson?: string; idempotencyKey?: string; watch?: boolean; json?: boolean }) => {
        const c = ctx();
        const parameters = buildParameters(opts);
        const client = c.client();
        const run = await client.runDeployment(name, {
          parameters,
          ...(opts.idempotencyKey !== undefined ? { idempotencyKey: opts.idempotencyKey } : {}),
        });
        if (!opts.watch) {
          if (opts.json) return c.json(run);
          c.out(
            `${formatState(run.state, c.style)}  created run ${c.style.bold(shortId(run.id))} ${c.style.dim(run.name)} of ${c.style.bold(name)}`,
          );
          c.out(c.style.dim(`  follow it: tessera runs show ${shortId(run.id)}   ·   tessera runs logs ${shortId(run.id)} --follow`));
          return;
        }
        if (!opts.json) c.err(c.style.dim(`following run ${shortId(run.id)} ${run.name} of ${name} (Ctrl+C stops following, not the run)`));
        const final = opts.json ? await followRun(client, run.id) : await watchRun(c, client, run);
        if (opts.json) c.json(final);
        else c.out(runSummaryLine(c, final));
        setExitCode(exitForRun(final));
      },
    );
}
