import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { formatPoolsTable } from '../format/resources.js';
import { examples, parseIntOption } from '../lib/options.js';

/** `tessera pools …`: work pools that workers claim runs from. */
export function registerPoolCommands(program: Command, ctx: () => CliContext): void {
  const pools = program
    .command('pools')
    .alias('pool')
    .description('manage work pools: the queues that workers claim runs from')
    .addHelpText('after', examples(['tessera pools create gpu --concurrency-limit 4'], ['tessera pools ls --json']));

  pools
    .command('create')
    .description('create a work pool')
    .argument('<name>', 'pool name (letters, digits, ".", "_", "-")')
    .option(
      '--concurrency-limit <n>',
      'most runs of this pool that may be active at once (default: unlimited)',
      parseIntOption('--concurrency-limit', 1),
    )
    .option('--description <text>', 'what the pool is for')
    .option('--json', 'print the created pool as JSON')
    .addHelpText(
      'after',
      examples(['tessera pools create default'], ['tessera pools create gpu --concurrency-limit 4 --description "A100 nodes"']),
    )
    .action(async (name: string, opts: { concurrencyLimit?: number; description?: string; json?: boolean }) => {
      const c = ctx();
      const pool = await c.client().createWorkPool({
        name,
        ...(opts.description !== undefined ? { description: opts.description } : {}),
        ...(opts.concurrencyLimit !== undefined ? { concurrencyLimit: opts.concurrencyLimit } : {}),
      });
      if (opts.json) return c.json(pool);
      const limit = pool.concurrencyLimit === null ? 'unlimited concurrency' : `concurrency limit ${pool.concurrencyLimit}`;
      c.out(`${c.style.green('✓')} created work pool ${c.style.bold(pool.name)} (${limit})`);
      c.out(c.style.dim(`  next: tessera worker start --pool ${pool.name}`));
    });

  pools
    .command('ls')
    .alias('list')
    .description('list work pools')
    .option('--json', 'print JSON')
    .addHelpText('after', examples(['tessera pools ls'], ['tessera pools ls --json | jq -r ".[].name"']))
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      const { items } = await c.client().listWorkPools();
      if (opts.json) return c.json(items);
      c.out(formatPoolsTable(items, { style: c.style }));
    });
}
