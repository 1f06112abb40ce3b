import type { LogEntry, TaskRunEvent } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { createStyle, PLAIN, stripAnsi, visibleWidth } from '../lib/style.js';
import { completedRun, completedStates, completedTasks, failedRun } from '../test-support/fixtures.js';
import { formatLogLine } from './logs.js';
import { RunProgress, truncate } from './progress.js';
import { formatDeploymentsTable, formatPoolsTable } from './resources.js';
import { formatRunDetails, formatRunsTable, formatStateChangeLine, formatTaskChangeLine } from './runs.js';
import { formatCause, formatSchedule, formatTrigger } from './states.js';

// Fixed zone and clock: the output is the same on every machine.
const opts = { style: PLAIN, timeZone: 'Europe/Paris', now: new Date('2026-11-28T09:00:00Z') };

describe('runs show', () => {
  it('explains a run that completed on its second attempt: states with causes, tasks, result', () => {
    const out = formatRunDetails({ run: completedRun(), states: completedStates(), taskRuns: completedTasks() }, opts);
    expect(out).toBe(
      [
        'nightly-etl / run 7f3c1a2b  crimson-otter',
        '  state      ✓ Completed  attempt 2 of 3',
        '  flow       nightly-etl  ·  deployment nightly-etl  ·  pool default',
        '  triggered  by schedule cron "0 2 * * *" Europe/Paris (created by ana@example.com)  at 2026-11-28 02:00:00 CET',
        '  time       started 2026-11-28 02:00:00 CET  ·  ended 02:00:41  ·  took 40.9 s',
        '  worker     w-1',
        '  parameters {"day":"2026-11-27"}',
        '  tags       etl',
        '  states     (times in CET, Europe/Paris)',
        '             2026-11-28 02:00:00.000  ◷ Scheduled                 by schedule cron "0 2 * * *" Europe/Paris',
        '                        02:00:00.004  ◌ Pending        attempt 1  by worker w-1',
        '                        02:00:00.120  ▶ Running                   by flow process, attempt 1',
        '                        02:00:20.500  ✗ Failed                    by flow process, attempt 1                 ECONNRESET',
        '                        02:00:20.501  ◷ AwaitingRetry             by server: retry rule                      retry 1 of 2 in 10 s',
        '                        02:00:30.600  ◌ Pending        attempt 2  by worker w-1',
        '                        02:00:30.700  ▶ Retrying                  by flow process, attempt 2',
        '                        02:00:41.000  ✓ Completed                 by flow process, attempt 2',
        '  tasks      5 task runs',
        '             extract-1     ✓ Completed    3.1 s',
        '             transform ×3  ✓ 3 Completed  1.5 s total',
        '             load-1        ✓ Completed    1.2 s        retried once',
        '  result     {"rows":120443}',
      ].join('\n'),
    );
  });

  it('shows the error with its stack frames when the run failed, and no result', () => {
    const out = formatRunDetails({ run: failedRun(), states: [], taskRuns: [] }, opts);
    expect(out).toBe(
      [
        'nightly-etl / run 0a1b2c3d  quiet-heron',
        '  state      ✗ Failed  attempt 1 of 1  kaboom',
        '  flow       nightly-etl',
        '  triggered  by local admin via `tessera run`  at 2026-11-28 02:00:00 CET',
        '  time       started 2026-11-28 02:00:00 CET  ·  ended 02:00:01  ·  took 500 ms',
        '  states     (times in CET, Europe/Paris)',
        '             (no transitions recorded)',
        '  tasks      (no task runs)',
        '  error      TaskRunError ERR_TASK_FAILED: task "load-1" failed: kaboom',
        '             at load (/srv/flows/etl.ts:12:9)',
        '             at async run (/srv/flows/etl.ts:30:3)',
      ].join('\n'),
    );
  });

  it('shows times in the zone it is given, with the zone named', () => {
    const out = formatRunDetails(
      { run: completedRun(), states: completedStates(), taskRuns: [] },
      { ...opts, timeZone: 'America/New_York' },
    );
    expect(out).toContain('started 2026-11-27 20:00:00 EST');
    expect(out).toContain('(times in EST, America/New_York)');
    expect(out).toContain('2026-11-27 20:00:00.000  ◷ Scheduled');
  });

  it('says how long a running run has been going and when a scheduled one should start', () => {
    const running = {
      ...completedRun(),
      state: { type: 'RUNNING' as const, name: 'Running', timestamp: '2026-11-28T08:59:00Z' },
      endTime: null,
      result: null,
      startTime: '2026-11-28T08:58:00Z',
    };
    expect(formatRunDetails({ run: running, states: [], taskRuns: [] }, opts)).toContain('running for 2 m 0 s');
    const scheduled = {
      ...running,
      state: { type: 'SCHEDULED' as const, name: 'Late', timestamp: '2026-11-28T08:59:00Z' },
      startTime: null,
      attempt: 0,
    };
    const out = formatRunDetails({ run: scheduled, states: [], taskRuns: [] }, opts);
    expect(out).toContain('◷ Late  not started');
    expect(out).toContain('expected to start 2026-11-28 02:00:00 CET');
  });

  it('colours only as an aid: the plain text is the same with colour on', () => {
    const details = { run: completedRun(), states: completedStates(), taskRuns: completedTasks() };
    const coloured = formatRunDetails(details, { ...opts, style: createStyle({ color: true }) });
    expect(coloured).not.toBe(formatRunDetails(details, opts));
    expect(
      stripAnsi(coloured)
        .split('\n')
        .map((l) => l.trimEnd()),
    ).toEqual(formatRunDetails(details, opts).split('\n'));
  });
});

describe('runs ls', () => {
  it('lists runs with short ids, local times with the zone in the header, and triggers', () => {
    expect(formatRunsTable([completedRun(), failedRun()], opts).split('\n')).toEqual([
      'ID        DEPLOYMENT            NAME           STATE        ATTEMPT  START (CET)  DURATION  TRIGGERED BY',
      '7f3c1a2b  nightly-etl           crimson-otter  ✓ Completed  2/3      02:00:00     40.9 s    schedule cron "0 2 * * *" Europe/Paris (created by ana@example.com)',
      '0a1b2c3d  nightly-etl (ad hoc)  quiet-heron    ✗ Failed     1/1      02:00:00     500 ms    local admin via `tessera run`',
    ]);
  });

  it('shows the date for runs of another day and says what to do when there are none', () => {
    expect(formatRunsTable([completedRun()], { ...opts, now: new Date('2026-12-01T09:00:00Z') })).toContain('2026-11-28 02:00:00');
    expect(formatRunsTable([], opts)).toMatch(/^no runs match; start one with `tessera deployments run NAME`/);
  });
});

describe('following a run', () => {
  it('prints one line per state change with its cause and message', () => {
    const states = completedStates();
    expect(formatStateChangeLine(states[4] as (typeof states)[number], opts)).toBe(
      '02:00:20 CET  ◷ AwaitingRetry  attempt 1  by server: retry rule  retry 1 of 2 in 10 s',
    );
  });

  it('prints one line per task change', () => {
    expect(
      formatTaskChangeLine(
        { name: 'load-1', state: { type: 'COMPLETED' }, attempt: 2, durationMs: 1200, timestamp: '2026-11-28T01:00:36Z' },
        opts,
      ),
    ).toBe('02:00:36 CET    task load-1  ✓ Completed  1.2 s  attempt 2');
  });

  it('formats log lines with level, task and indented continuation lines, redacting tokens', () => {
    const entry: LogEntry = {
      flowRunId: 'r',
      level: 'warn',
      message: 'token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0abc.c2lnbmF0dXJlMTIz leaked\nsecond line',
      timestamp: '2026-11-28T01:00:36.250Z',
    };
    expect(formatLogLine(entry, { style: PLAIN, timeZone: 'Europe/Paris', taskName: 'load-1' })).toBe(
      '02:00:36.250 CET  WARN   [load-1] token [redacted JWT …MTIz] leaked\n                         second line',
    );
  });
});

describe('live progress of `tessera run`', () => {
  const ev = (id: string, key: string, name: string, type: TaskRunEvent['state']['type'], ts: string, attempt = 1): TaskRunEvent => ({
    taskRunId: id,
    flowRunId: 'r',
    taskKey: key,
    name,
    state: { type },
    attempt,
    maxRetries: 1,
    timestamp: ts,
  });

  it('tracks task durations and counts, and groups calls of one task', () => {
    const p = new RunProgress(Date.parse('2026-11-28T01:00:00Z'));
    p.applyRun({ ...completedRun(), state: { type: 'RUNNING', name: 'Running', timestamp: '2026-11-28T01:00:00Z' } });
    p.applyTask(ev('a', 'extract', 'extract-1', 'RUNNING', '2026-11-28T01:00:01Z'));
    expect(p.applyTask(ev('a', 'extract', 'extract-1', 'COMPLETED', '2026-11-28T01:00:04.100Z'))).toEqual({ durationMs: 3100 });
    for (const i of [1, 2, 3]) p.applyTask(ev(`t${i}`, 'transform', `transform-${i}`, 'RUNNING', '2026-11-28T01:00:05Z'));
    p.applyTask(ev('t1', 'transform', 'transform-1', 'COMPLETED', '2026-11-28T01:00:06Z'));
    p.applyTask(ev('l', 'load', 'load-1', 'FAILED', '2026-11-28T01:00:06Z', 2));
    expect(p.counts()).toEqual({ total: 5, done: 3, failed: 1, running: 2 });
    const lines = p.render({ style: PLAIN, now: Date.parse('2026-11-28T01:00:07Z'), frame: 0, width: 120, title: 'nightly-etl' });
    expect(lines).toEqual([
      '⠋ nightly-etl run 7f3c1a2b  ▶ Running  7.0 s  tasks 3/5 done, 1 failed',
      '  ✓ extract-1 3.1 s   ▶ transform ×3 (1/3)   ✗ load-1 (attempt 2)',
    ]);
  });

  it('never draws wider than the terminal', () => {
    const p = new RunProgress(0);
    for (let i = 0; i < 30; i++) p.applyTask(ev(`t${i}`, `step${i}`, `step-number-${i}`, 'RUNNING', '1970-01-01T00:00:01Z'));
    const lines = p.render({
      style: createStyle({ color: true }),
      now: 2000,
      frame: 3,
      width: 60,
      title: 'a-very-long-flow-name-that-goes-on-and-on-and-on',
    });
    for (const l of lines) expect(visibleWidth(l)).toBeLessThanOrEqual(60);
    expect(stripAnsi(lines[1] as string)).toMatch(/\+\d+ more/);
  });

  it('truncates keeping ANSI escapes whole', () => {
    const red = createStyle({ color: true }).red('abcdefghij');
    const cut = truncate(red, 5);
    expect(stripAnsi(cut)).toBe('abcd…');
    expect(cut.startsWith('\x1b[31m')).toBe(true);
    expect(truncate('short', 10)).toBe('short');
  });
});

describe('causes, triggers, schedules, deployments and pools', () => {
  it('names who or what caused a transition', () => {
    expect(formatCause({ kind: 'worker', id: 'w1', label: 'w-1' })).toBe('worker w-1');
    expect(formatCause({ kind: 'person', id: 'u1', label: 'ana@example.com' })).toBe('ana@example.com');
    expect(formatCause({ kind: 'machine', id: 'ci' })).toBe('machine ci');
    expect(formatCause({ kind: 'schedule', id: '1234567890ab' })).toBe('schedule 12345678');
    expect(formatCause({ kind: 'server', id: 'zombie-detector', label: 'zombie detector' })).toBe('server: zombie detector');
    expect(formatCause(null)).toBe('unknown');
    expect(formatTrigger({ triggerKind: 'manual', triggeredBy: { kind: 'person', id: 'u', label: 'ana@example.com' } })).toBe(
      'ana@example.com (manual run)',
    );
  });

  it('describes schedules', () => {
    expect(formatSchedule({ cron: '0 2 * * *', timezone: 'Europe/Paris' })).toBe('cron "0 2 * * *" (Europe/Paris)');
    expect(formatSchedule({ interval: 600_000 })).toBe('every 10 m');
    expect(formatSchedule({ interval: 3_600_000, active: false })).toBe('every 1 h (paused)');
  });

  it('lists deployments and pools, or says how to create the first one', () => {
    const now = new Date('2026-11-28T09:00:00Z');
    const deployment = {
      id: 'd1',
      flowId: 'f1',
      name: 'nightly-etl',
      flowName: 'nightly-etl',
      entrypoint: 'flows/etl.ts:nightly',
      path: '/srv',
      workPool: 'default',
      workQueue: 'high',
      description: null,
      parameters: {},
      parameterSchema: null,
      tags: [],
      schedules: [
        { id: 's', deploymentId: 'd1', cron: '0 2 * * *', intervalMs: null, anchor: null, timezone: 'UTC', active: true, createdBy: null },
      ],
      environment: 'prod',
      identity: { audiences: ['sts.amazonaws.com'] },
      concurrencyLimit: null,
      retries: 0,
      retryDelaysMs: [],
      env: {},
      createdAt: '2026-11-28T08:00:00Z',
      updatedAt: '2026-11-28T08:55:00Z',
    };
    expect(formatDeploymentsTable([deployment], { style: PLAIN, now }).split('\n')).toEqual([
      'NAME         FLOW         POOL          SCHEDULES         ENV   AUDIENCES          UPDATED',
      'nightly-etl  nightly-etl  default/high  cron "0 2 * * *"  prod  sts.amazonaws.com  5 m ago',
    ]);
    expect(formatDeploymentsTable([], { style: PLAIN, now })).toMatch(/tessera deploy/);
    const pool = {
      id: 'p',
      name: 'gpu',
      description: 'A100 nodes',
      concurrencyLimit: 4,
      paused: false,
      createdAt: '',
      activeRuns: 1,
      queues: [],
    };
    expect(formatPoolsTable([pool], { style: PLAIN }).split('\n')).toEqual([
      'NAME  STATUS  CONCURRENCY  ACTIVE RUNS  QUEUES  DESCRIPTION',
      'gpu   ready   4            1                    A100 nodes',
    ]);
    expect(formatPoolsTable([], { style: PLAIN })).toMatch(/tessera pools create NAME/);
  });
});
