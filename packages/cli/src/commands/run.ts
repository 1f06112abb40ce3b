import type { FlowRun } from '@tessera/core';
import { formatDuration, isTesseraError, STATE_NAMES, TesseraError } from '@tessera/core';
import type { Flow } from '@tessera/sdk';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { formatLogLine } from '../format/logs.js';
import { RunProgress } from '../format/progress.js';
import { formatRunError, formatTaskChangeLine } from '../format/runs.js';
import { formatState, shortId } from '../format/states.js';
import { entrypointHint } from '../lib/entrypoint-hint.js';
import { EXIT } from '../lib/exit.js';
import { LiveRegion } from '../lib/live.js';
import { examples } from '../lib/options.js';
import { buildParameters, collect } from '../lib/params.js';
import { elapsed, formatTime, zoneName } from '../lib/time.js';
import { registerTypeScriptLoader } from '../lib/tsx.js';

/** `tessera run FILE.ts:flow`: run a flow now, in this process, tracked by the server. */
export function registerRunCommand(program: Command, ctx: () => CliContext, setExitCode: (code: number) => void): void {
  program
    .command('run')
    .description('run a flow now in this process, as a tracked ad hoc run with its own identity')
    .argument('<entrypoint>', 'path/to/file.ts:exportName (path relative to the working directory)')
    .option('-p, --param <key=value>', 'a parameter; the value is JSON when it parses, else a string (repeatable)', collect)
    .option('--params-json <json>', 'all parameters as one JSON object (--param values win)')
    .option('--tag <tag>', 'a tag for the run (repeatable)', collect)
    .option('--json', 'print { run, result, error } as JSON on stdout instead of the result')
    .addHelpText(
      'after',
      `
Progress and logs go to stderr; the flow's JSON result goes to stdout, so
\`tessera run flows/etl.ts:nightly > result.json\` keeps just the result.
Ctrl+C cancels the run (it ends Cancelled); a second Ctrl+C exits at once.
Exit status: 0 completed, 1 failed or cancelled, 2 bad entrypoint or parameters, 3 no server.
${examples(['tessera run flows/hello.ts:hello'], ['tessera run flows/etl.ts:nightly --param day=2026-11-28 --param limit=100'], [`tessera run flows/report.ts:report --params-json '{"to":["ana@example.com"]}'`])}`,
    )
    .action(async (entrypoint: string, opts: { param?: string[]; paramsJson?: string; tag?: string[]; json?: boolean }) => {
      const c = ctx();
      const parameters = buildParameters(opts);
      await registerTypeScriptLoader();
      const sdk = await import('@tessera/sdk');
      const flow = await sdk.loadFlowFromEntrypoint(entrypoint, c.io.cwd).catch((e: unknown) => {
        const hint = entrypointHint(entrypoint, c.io.cwd);
        if (hint && isTesseraError(e)) throw new TesseraError(e.code, e.message + hint, { cause: e });
        throw e;
      });
      const title = sdk.describeFlow(flow).name;
      const client = c.client();

      const style = c.errStyle;
      const fmt = { style, timeZone: c.timeZone, now: new Date() };
      const progress = new RunProgress();
      const live = style.tty ? new LiveRegion(c.io.stderr) : undefined;
      let frame = 0;
      const view = () => progress.render({ style, now: Date.now(), frame, width: Math.max(40, c.io.stderr.columns || 100), title });
      const timer = live
        ? setInterval(() => {
            frame++;
            live.render(view());
          }, 100)
        : undefined;
      const emit = (line: string) => (live ? live.print(line, view()) : c.err(line));
      const taskNames = new Map<string, string>();
      let lastRunState = '';

      const abort = new AbortController();
      let interrupts = 0;
      const onSigint = () => {
        interrupts++;
        if (interrupts > 1) process.exit(130);
        emit(style.yellow('cancelling the run (Ctrl+C again to exit at once)…'));
        abort.abort();
      };
      process.on('SIGINT', onSigint);

      let outcome: Awaited<ReturnType<typeof sdk.runFlowAttached>>;
      try {
        outcome = await sdk.runFlowAttached(flow as unknown as Flow<Record<string, unknown>, unknown>, {
          client,
          parameters,
          ...(opts.tag ? { tags: opts.tag } : {}),
          printLogs: false,
          signal: abort.signal,
          onEvent: (event) => {
            if (event.type === 'flow-run') {
              progress.applyRun(event.run);
              const key = `${event.run.state.type}/${event.run.state.name}/${event.run.attempt}`;
              if (key !== lastRunState) {
                lastRunState = key;
                if (!live) emit(flowStateLine(event.run, fmt));
                else live.render(view());
              }
            } else if (event.type === 'task-run') {
              const e = event.event;
              taskNames.set(e.taskRunId, e.name);
              const { durationMs } = progress.applyTask(e);
              if (!live)
                emit(formatTaskChangeLine({ name: e.name, state: e.state, attempt: e.attempt, durationMs, timestamp: e.timestamp }, fmt));
              else if (e.state.type === 'FAILED' || e.state.type === 'CRASHED') {
                emit(formatTaskChangeLine({ name: e.name, state: e.state, attempt: e.attempt, durationMs, timestamp: e.timestamp }, fmt));
              } else live.render(view());
            } else {
              const e = event.entry;
              emit(formatLogLine(e, { style, timeZone: c.timeZone, taskName: e.taskRunId ? taskNames.get(e.taskRunId) : undefined }));
            }
          },
        });
      } finally {
        if (timer) clearInterval(timer);
        live?.clear();
        process.off('SIGINT', onSigint);
      }

      const { run, result, error } = outcome;
      const counts = progress.counts();
      const took = elapsed(run.startTime, run.endTime);
      const tasks = counts.total
        ? c.errStyle.dim(`  ${counts.total} task run${counts.total === 1 ? '' : 's'}${counts.failed ? `, ${counts.failed} failed` : ''}`)
        : '';
      c.err(
        `${formatState(run.state, style)}  ${style.bold(title)} run ${shortId(run.id)}${took === undefined ? '' : ` in ${formatDuration(took)}`}${tasks}`,
      );
      if (error) c.err(formatRunError(error, style).replace(/^/gm, '  '));
      if (run.state.type !== 'COMPLETED') c.err(style.dim(`  details: tessera runs show ${shortId(run.id)}`));
      if (opts.json) c.json({ run, result: result ?? null, error });
      else if (run.state.type === 'COMPLETED') c.out(JSON.stringify(result ?? null, null, 2));
      setExitCode(run.state.type === 'COMPLETED' ? EXIT.ok : EXIT.failure);
    });
}

function flowStateLine(run: FlowRun, fmt: { style: CliContext['style']; timeZone: string }): string {
  const t = run.state.timestamp;
  const name = run.state.name || STATE_NAMES[run.state.type];
  return [
    fmt.style.dim(`${formatTime(t, fmt.timeZone)} ${zoneName(fmt.timeZone, t)}`),
    `run ${shortId(run.id)}`,
    formatState({ type: run.state.type, name }, fmt.style),
    run.attempt > 0 ? `attempt ${run.attempt} of ${run.maxRetries + 1}` : '',
    run.state.message ? fmt.style.dim(run.state.message) : '',
  ]
    .filter(Boolean)
    .join('  ');
}
