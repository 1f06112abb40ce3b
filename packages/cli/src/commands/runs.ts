import type { ApiClient, FlowRun, TaskRun } from '@tessera/core';
import { isTerminal, STATE_NAMES, STATE_TYPES } from '@tessera/core';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { CliContext } from '../context.js';
import { formatLogLine } from '../format/logs.js';
import { formatRunDetails, formatRunsTable, formatStateChangeLine, formatTaskChangeLine } from '../format/runs.js';
import { formatState, shortId } from '../format/states.js';
import { EXIT } from '../lib/exit.js';
import { drainLogs, followRun } from '../lib/follow.js';
import { examples, parseIntOption } from '../lib/options.js';
import { didYouMean } from '../lib/suggest.js';
import { elapsed } from '../lib/time.js';

/** Accepts a state type or name in any case (`failed`, `COMPLETED`, `Late`). */
export function parseStateFilter(value: string): string {
  const upper = value.toUpperCase();
  if ((STATE_TYPES as readonly string[]).includes(upper)) return upper;
  const names = [...Object.values(STATE_NAMES), 'Late', 'AwaitingRetry', 'Retrying'];
  const byName = names.find((n) => n.toLowerCase() === value.toLowerCase());
  if (byName) return byName;
  const guess = didYouMean(value, names);
  throw new InvalidArgumentError(
    `unknown state ${JSON.stringify(value)}${guess ? `; did you mean "${guess}"?` : ''} (one of: ${names.join(', ')})`,
  );
}

/** Fetches what `runs show` displays: the run (id or prefix), its state history and its task runs. */
export async function fetchRunDetails(client: ApiClient, idOrPrefix: string) {
  const run = await client.getFlowRun(idOrPrefix);
  const [states, taskRuns] = await Promise.all([client.getFlowRunStates(run.id), client.listTaskRuns(run.id)]);
  return { run, states: states.items, taskRuns: taskRuns.items };
}

/** Prints every state change and task change of a run until it ends; returns the final run. */
export async function watchRun(
  c: CliContext,
  client: ApiClient,
  run: FlowRun,
  options: { includeHistory?: boolean } = {},
): Promise<FlowRun> {
  const fmt = c.format();
  return followRun(client, run.id, {
    includeHistory: options.includeHistory ?? true,
    onState: (entry) => c.out(formatStateChangeLine(entry, fmt)),
    onTask: (t: TaskRun) =>
      c.out(
        formatTaskChangeLine(
          {
            name: t.name,
            state: t.state,
            attempt: t.attempt,
            durationMs: isTerminal(t.state.type) ? elapsed(t.startTime, t.endTime) : undefined,
            timestamp: t.state.timestamp,
          },
          fmt,
        ),
      ),
  });
}

/** The one-line ending of a followed run: `✓ nightly-etl run 7f3c1a2b Completed in 41.0 s`. */
export function runSummaryLine(c: CliContext, run: FlowRun): string {
  const took = elapsed(run.startTime, run.endTime);
  const d = took === undefined ? '' : ` in ${(took / 1000).toFixed(1)} s`;
  return `${formatState(run.state, c.style)}  ${c.style.bold(run.deploymentName ?? run.flowName)} run ${shortId(run.id)}${d}${run.state.message && run.state.type !== 'COMPLETED' ? `: ${run.state.message}` : ''}`;
}

/** `tessera runs …`: inspect, follow and cancel flow runs. */
export function registerRunCommands(program: Command, ctx: () => CliContext): void {
  const runs = program
    .command('runs')
    .description('inspect, follow and cancel flow runs (ids may be unambiguous prefixes)')
    .addHelpText(
      'after',
      examples(
        ['tessera runs ls --state failed'],
        ['tessera runs show 7f3c'],
        ['tessera runs logs 7f3c --follow'],
        ['tessera runs cancel 7f3c'],
        ['tessera runs revoke-identity 7f3c'],
      ),
    );

  runs
    .command('ls')
    .alias('list')
    .description('list recent flow runs, newest first')
    .option('--state <state>', 'only runs in this state (type or name: failed, running, late …)', parseStateFilter)
    .option('--deployment <name>', 'only runs of this deployment')
    .option('--limit <n>', 'at most this many runs', parseIntOption('--limit', 1, 1000), 20)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      examples(
        ['tessera runs ls'],
        ['tessera runs ls --state failed --deployment nightly-etl --limit 5'],
        ['tessera runs ls --json | jq -r ".[].id"'],
      ),
    )
    .action(async (opts: { state?: string; deployment?: string; limit: number; json?: boolean }) => {
      const c = ctx();
      const { items } = await c.client().listFlowRuns({
        ...(opts.state !== undefined ? { state: opts.state } : {}),
        ...(opts.deployment !== undefined ? { deployment: opts.deployment } : {}),
        limit: opts.limit,
      });
      if (opts.json) return c.json(items);
      c.out(formatRunsTable(items, c.format()));
    });

  runs
    .command('show')
    .alias('inspect')
    .description('explain a run: state and cause of every transition, task runs, error and result')
    .argument('<id>', 'run id or an unambiguous prefix (e.g. the 8 characters `runs ls` shows)')
    .option('--json', 'print { run, states, taskRuns } as JSON')
    .addHelpText('after', examples(['tessera runs show 7f3c1a2b'], ['tessera runs show 7f3c --json | jq .run.result']))
    .action(async (id: string, opts: { json?: boolean }) => {
      const c = ctx();
      const details = await fetchRunDetails(c.client(), id);
      if (opts.json) return c.json(details);
      c.out(formatRunDetails(details, c.format()));
    });

  runs
    .command('logs')
    .description("print a run's logs")
    .argument('<id>', 'run id or an unambiguous prefix')
    .option('-f, --follow', 'keep printing new lines until the run ends')
    .option('--json', 'print log entries as JSON lines')
    .addHelpText('after', examples(['tessera runs logs 7f3c'], ['tessera runs logs 7f3c --follow']))
    .action(async (id: string, opts: { follow?: boolean; json?: boolean }) => {
      const c = ctx();
      const client = c.client();
      const run = await client.getFlowRun(id);
      const taskNames = new Map<string, string>();
      const refreshTasks = async () => {
        for (const t of (await client.listTaskRuns(run.id)).items) taskNames.set(t.id, t.name);
      };
      await refreshTasks();
      const print = (entry: Parameters<typeof formatLogLine>[0]) => {
        if (opts.json) return c.io.stdout.write(`${JSON.stringify(entry)}\n`);
        c.out(
          formatLogLine(entry, {
            style: c.style,
            timeZone: c.timeZone,
            taskName: entry.taskRunId ? (taskNames.get(entry.taskRunId) ?? shortId(entry.taskRunId)) : undefined,
          }),
        );
      };
      if (!opts.follow) {
        await drainLogs(client, run.id, undefined, print);
        return;
      }
      let missing = false;
      const final = await followRun(client, run.id, {
        onTask: (t) => {
          taskNames.set(t.id, t.name);
        },
        onLog: (e) => {
          if (e.taskRunId && !taskNames.has(e.taskRunId)) missing = true;
          print(e);
        },
      });
      if (missing) await refreshTasks();
      if (!opts.json) c.err(runSummaryLine(c, final));
    });

  runs
    .command('cancel')
    .description('cancel a run: a scheduled run is cancelled at once, a running one is stopped by its worker')
    .argument('<id>', 'run id or an unambiguous prefix')
    .option('--json', 'print the run as JSON')
    .addHelpText('after', examples(['tessera runs cancel 7f3c']))
    .action(async (id: string, opts: { json?: boolean }) => {
      const c = ctx();
      const client = c.client();
      const run = await client.getFlowRun(id);
      const after = await client.cancelFlowRun(run.id);
      if (opts.json) return c.json(after);
      const title = `${c.style.bold(after.deploymentName ?? after.flowName)} run ${shortId(after.id)}`;
      if (after.state.type === 'CANCELLING') {
        c.out(`${formatState(after.state, c.style)}  ${title}: its worker${after.workerName ? ` (${after.workerName})` : ''} will stop it`);
        c.out(c.style.dim(`  follow it: tessera runs show ${shortId(after.id)}`));
      } else {
        c.out(`${formatState(after.state, c.style)}  ${title}`);
      }
    });

  runs
    .command('revoke-identity')
    .description(
      "revoke a run's identity: its tokens turn inactive at once (introspection) and it gets no new ones; the run itself goes on (cancel it to stop it)",
    )
    .argument('<id>', 'run id or an unambiguous prefix')
    .option('--reason <text>', 'why, for the record')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', examples(['tessera runs revoke-identity 7f3c'], ['tessera runs revoke-identity 7f3c --reason "leaked token"']))
    .action(async (id: string, opts: { reason?: string; json?: boolean }) => {
      const c = ctx();
      const client = c.client();
      const run = await client.getFlowRun(id);
      const result = await client.revokeRunIdentity(run.id, opts.reason !== undefined ? { reason: opts.reason } : {});
      if (opts.json) return c.json(result);
      const title = `${c.style.bold(run.deploymentName ?? run.flowName)} run ${shortId(run.id)}`;
      if (result.alreadyRevoked) {
        c.out(`identity of ${title} was already revoked at ${result.revokedAt} by ${result.revokedBy}`);
        return;
      }
      const n = result.tokensRevoked;
      c.out(
        `revoked the identity of ${title}: ${n} unexpired token${n === 1 ? '' : 's'} now inactive; new token requests answer ERR_IDENTITY_REVOKED`,
      );
      if (!isTerminal(run.state.type))
        c.out(c.style.dim(`  the run is still ${run.state.name}; stop it with: tessera runs cancel ${shortId(run.id)}`));
    });
}

/** Exit status for a followed run: 0 when it completed. */
export function exitForRun(run: FlowRun): number {
  return run.state.type === 'COMPLETED' ? EXIT.ok : EXIT.failure;
}
