import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ValidationError } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { loadProjectFile } from './load-project.js';
import type { LocatedIssue } from './yaml-source.js';

const CWD = '/projects/acme';
const FILE = '/projects/acme/tessera.yaml';

/** Loads YAML text as /projects/acme/tessera.yaml without touching the disk. */
function load(text: string) {
  return loadProjectFile(FILE, { cwd: CWD, text });
}

/** The ValidationError thrown for `text`. */
function problems(text: string): ValidationError {
  try {
    load(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ValidationError);
    return e as ValidationError;
  }
  throw new Error('expected the file to be rejected');
}

/** 1-based line and column of the `nth` occurrence of `needle` in `text`. */
function pos(text: string, needle: string, nth = 1): { line: number; column: number } {
  let idx = -1;
  for (let i = 0; i < nth; i++) {
    idx = text.indexOf(needle, idx + 1);
    if (idx < 0) throw new Error(`"${needle}" not found ${nth} times`);
  }
  const before = text.slice(0, idx).split('\n');
  return { line: before.length, column: (before.at(-1) as string).length + 1 };
}

function issueAt(err: ValidationError, path: string): LocatedIssue {
  const issue = (err.issues as LocatedIssue[]).find((i) => i.path === path);
  if (!issue) throw new Error(`no issue at ${path}; issues:\n${err.message}`);
  return issue;
}

describe('loadProjectFile: valid files', () => {
  it('compiles every field: camelCase, durations in ms, defaults applied', () => {
    const text = `deployments:
  - name: nightly-etl
    description: Loads yesterday's orders
    entrypoint: flows/etl.ts:nightlyEtl
    work_pool: { name: gpu, work_queue: high }
    schedule: { cron: "0 2 * * *", timezone: Europe/Paris }
    parameters: { day: today, limit: 100 }
    tags: [etl, nightly]
    environment: prod
    identity:
      audiences: [sts.amazonaws.com, vault.internal]
      max_lifetime: 1h
    concurrency_limit: 1
    retries: 2
    retry_delay: [30, 5m]
    env: { LOG_FORMAT: json, WORKERS: 4, VERBOSE: true }
  - name: hello
    entrypoint: flows/hello.ts:hello
`;
    const project = load(text);
    expect(project.path).toBe(FILE);
    expect(project.dir).toBe(CWD);
    expect(project.displayName).toBe('tessera.yaml');
    expect(project.deployments).toEqual([
      {
        index: 0,
        name: 'nightly-etl',
        description: "Loads yesterday's orders",
        entrypoint: 'flows/etl.ts:nightlyEtl',
        entrypointFile: 'flows/etl.ts',
        entrypointExport: 'nightlyEtl',
        workPool: 'gpu',
        workQueue: 'high',
        schedules: [{ cron: '0 2 * * *', timezone: 'Europe/Paris' }],
        parameters: { day: 'today', limit: 100 },
        tags: ['etl', 'nightly'],
        environment: 'prod',
        identity: { audiences: ['sts.amazonaws.com', 'vault.internal'], maxLifetimeMs: 3_600_000 },
        concurrencyLimit: 1,
        retries: 2,
        retryDelaysMs: [30_000, 300_000],
        env: { LOG_FORMAT: 'json', WORKERS: '4', VERBOSE: 'true' },
      },
      {
        index: 1,
        name: 'hello',
        entrypoint: 'flows/hello.ts:hello',
        entrypointFile: 'flows/hello.ts',
        entrypointExport: 'hello',
        workPool: 'default',
        schedules: [],
        parameters: {},
        tags: [],
        environment: 'dev',
      },
    ]);
  });

  it('accepts a list of schedules: cron, interval as a duration or a number of seconds, anchor', () => {
    const project = load(`deployments:
  - name: sync
    entrypoint: sync.ts:sync
    schedules:
      - cron: "*/15 * * * *"
      - interval: 10m
        anchor: "2026-01-01T00:30:00Z"
      - interval: 90
        active: false
`);
    expect(project.deployments[0]?.schedules).toEqual([
      { cron: '*/15 * * * *' },
      { interval: 600_000, anchor: '2026-01-01T00:30:00.000Z' },
      { interval: 90_000, active: false },
    ]);
  });

  it('accepts a single retry_delay, a null concurrency_limit and empty optional collections', () => {
    const project = load(`deployments:
  - name: a
    entrypoint: a.ts:a
    retry_delay: 10s
    concurrency_limit: null
    tags:
    parameters:
`);
    const d = project.deployments[0];
    expect(d?.retryDelaysMs).toEqual([10_000]);
    expect(d?.concurrencyLimit).toBeNull();
    expect(d?.tags).toEqual([]);
    expect(d?.parameters).toEqual({});
  });

  it('supports YAML anchors under `definitions` and merge keys, as prefect.yaml does', () => {
    const project = load(`definitions:
  common: &common
    work_pool: gpu
    tags: [shared]
deployments:
  - name: a
    entrypoint: a.ts:a
    <<: *common
  - name: b
    entrypoint: b.ts:b
    <<: *common
    tags: [own]
`);
    expect(project.deployments.map((d) => [d.workPool, d.tags])).toEqual([
      ['gpu', ['shared']],
      ['gpu', ['own']],
    ]);
  });

  it('keeps the last colon as the export separator (Windows drive letters)', () => {
    const d = load(`deployments:\n  - name: w\n    entrypoint: 'C:\\flows\\etl.ts:etl'\n`).deployments[0];
    expect(d?.entrypointFile).toBe('C:\\flows\\etl.ts');
    expect(d?.entrypointExport).toBe('etl');
  });

  it('reads the file from disk and names it relative to the working directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-yaml-'));
    writeFileSync(join(dir, 'tessera.yaml'), 'deployments:\n  - name: a\n    entrypoint: a.ts:a\n');
    const project = loadProjectFile('tessera.yaml', { cwd: dir });
    expect(project.path).toBe(join(dir, 'tessera.yaml'));
    expect(project.dir).toBe(dir);
    expect(project.displayName).toBe('tessera.yaml');
    expect(loadProjectFile(join(dir, 'tessera.yaml'), { cwd: '/somewhere/else' }).displayName).toBe(join(dir, 'tessera.yaml'));
  });

  it('locates fields for errors found after loading (unknown pool, bad entrypoint)', () => {
    const text = 'deployments:\n  - name: a\n    entrypoint: a.ts:a\n    work_pool: gpu\n';
    const project = load(text);
    expect(project.locate(['deployments', 0, 'work_pool'])).toEqual({ file: 'tessera.yaml', ...pos(text, 'gpu') });
    expect(project.issue(['deployments', 0, 'work_pool'], 'work pool "gpu" does not exist')).toEqual({
      file: 'tessera.yaml',
      ...pos(text, 'gpu'),
      path: 'deployments[0].work_pool',
      message: 'work pool "gpu" does not exist',
    });
  });
});

describe('loadProjectFile: errors name file, line, column and field', () => {
  it('rejects an out-of-range cron field with the range, at the cron value', () => {
    const text = `deployments:
  - name: hello
    entrypoint: flows/hello.ts:hello
  - name: nightly-etl
    entrypoint: flows/etl.ts:nightly
    schedule:
      cron: "0 25 * * *"
`;
    const err = problems(text);
    expect(err.code).toBe('ERR_CONFIG');
    const { line, column } = pos(text, '"0 25');
    expect(err.message).toBe(
      `tessera.yaml: 1 problem\ntessera.yaml:${line}:${column}  deployments[1].schedule.cron: "0 25 * * *" is not a valid cron expression (hour must be 0-23)`,
    );
    expect(err.issues).toEqual([
      {
        file: 'tessera.yaml',
        line,
        column,
        path: 'deployments[1].schedule.cron',
        message: '"0 25 * * *" is not a valid cron expression (hour must be 0-23)',
      },
    ]);
  });

  it.each([
    ['61 * * * *', 'minute must be 0-59'],
    ['0 0 32 * *', 'day of month must be 1-31'],
    ['0 0 * 13 *', 'month must be 1-12 or JAN-DEC'],
    ['0 0 * * 8', 'day of week must be 0-7 or SUN-SAT'],
    ['* * *', 'expected 5 fields "minute hour day-of-month month day-of-week", or 6 with seconds first'],
    ['every day', 'expected 5 fields "minute hour day-of-month month day-of-week", or 6 with seconds first'],
  ])('explains the cron expression %j: %s', (cron, hint) => {
    const err = problems(`deployments:\n  - name: a\n    entrypoint: a.ts:a\n    schedule: { cron: "${cron}" }\n`);
    expect(issueAt(err, 'deployments[0].schedule.cron').message).toBe(`"${cron}" is not a valid cron expression (${hint})`);
  });

  it('rejects a cron expression that never fires', () => {
    const err = problems('deployments:\n  - name: a\n    entrypoint: a.ts:a\n    schedule: { cron: "0 0 30 2 *" }\n');
    expect(issueAt(err, 'deployments[0].schedule.cron').message).toMatch(/^"0 0 30 2 \*" never matches a date/);
  });

  it('rejects an unknown time zone', () => {
    const text = 'deployments:\n  - name: a\n    entrypoint: a.ts:a\n    schedule: { cron: "0 2 * * *", timezone: Europe/Pariss }\n';
    const issue = issueAt(problems(text), 'deployments[0].schedule.timezone');
    expect(issue).toMatchObject(pos(text, 'Europe/Pariss'));
    expect(issue.message).toBe('"Europe/Pariss" is not a known IANA time zone; use e.g. "UTC", "Europe/Paris" or "America/New_York"');
  });

  it('rejects bad durations wherever they appear, each at its own position', () => {
    const text = `deployments:
  - name: a
    entrypoint: a.ts:a
    schedule: { interval: 10 minutes }
    identity: { audiences: [x], max_lifetime: forever }
    retry_delay: [10s, soon, 1m]
  - name: b
    entrypoint: b.ts:b
    retry_delay: -5
    schedule: { interval: 0 }
`;
    const err = problems(text);
    expect(issueAt(err, 'deployments[0].schedule.interval')).toMatchObject({
      ...pos(text, '10 minutes'),
      message: '"10 minutes" is not a valid duration; use e.g. "30s", "10m", "1h30m", or a number of seconds',
    });
    expect(issueAt(err, 'deployments[0].identity.max_lifetime')).toMatchObject({
      ...pos(text, 'forever'),
      message: expect.stringContaining('"forever" is not a valid duration'),
    });
    expect(issueAt(err, 'deployments[0].retry_delay[1]')).toMatchObject({
      ...pos(text, 'soon'),
      message: expect.stringContaining('"soon" is not a valid duration'),
    });
    expect(issueAt(err, 'deployments[1].retry_delay')).toMatchObject({
      ...pos(text, '-5'),
      message: expect.stringContaining('the number -5 is not a valid duration'),
    });
    expect(issueAt(err, 'deployments[1].schedule.interval')).toMatchObject({ message: 'must be longer than zero, found 0' });
    expect(err.issues).toHaveLength(5);
  });

  it('rejects unknown keys at the key, with a did-you-mean when one is close', () => {
    const text = `deployments:
  - name: a
    entrypoint: a.ts:a
    shedule: { cron: "0 2 * * *" }
    workPool: gpu
    work_pool: { name: gpu, queue: high }
    identity: { audience: [x] }
    colour: blue
deploymnets: []
`;
    const err = problems(text);
    expect(issueAt(err, 'deployments[0].shedule')).toMatchObject({
      ...pos(text, 'shedule'),
      message: 'unknown key "shedule"; did you mean "schedule"?',
    });
    expect(issueAt(err, 'deployments[0].workPool')).toMatchObject({
      ...pos(text, 'workPool'),
      message: 'unknown key "workPool"; did you mean "work_pool"?',
    });
    expect(issueAt(err, 'deployments[0].work_pool.queue')).toMatchObject({
      ...pos(text, 'queue'),
      message: 'unknown key "queue"; did you mean "work_queue"?',
    });
    expect(issueAt(err, 'deployments[0].identity.audience')).toMatchObject({
      ...pos(text, 'audience:'),
      message: 'unknown key "audience"; did you mean "audiences"?',
    });
    expect(issueAt(err, 'deployments[0].colour').message).toMatch(/^unknown key "colour"; expected one of: name, entrypoint, work_pool, /);
    expect(issueAt(err, 'deploymnets')).toMatchObject({
      ...pos(text, 'deploymnets'),
      message: 'unknown key "deploymnets"; did you mean "deployments"?',
    });
    // identity.audiences is then missing too.
    expect(issueAt(err, 'deployments[0].identity.audiences').message).toBe('is required');
  });

  it('rejects unknown keys inside a schedule', () => {
    const text = 'deployments:\n  - name: a\n    entrypoint: a.ts:a\n    schedules:\n      - cron: "0 2 * * *"\n        tz: UTC\n';
    expect(issueAt(problems(text), 'deployments[0].schedules[0].tz')).toMatchObject({
      ...pos(text, 'tz:'),
      message: expect.stringMatching(/^unknown key "tz"; /),
    });
  });

  it('rejects wrong types, saying what was expected and what was found', () => {
    const text = `deployments:
  - name: a
    entrypoint: a.ts:a
    tags: web
    retries: "3"
    concurrency_limit: 1.5
    parameters: [1, 2]
    description: 42
    work_pool: 7
    env: { A: 1, B: { c: 1 }, bad-name: x }
    identity: { audiences: sts.amazonaws.com }
`;
    const err = problems(text);
    expect(issueAt(err, 'deployments[0].tags')).toMatchObject({ ...pos(text, 'web'), message: 'expected a list, found the string "web"' });
    expect(issueAt(err, 'deployments[0].retries')).toMatchObject({
      ...pos(text, '"3"'),
      message: 'expected an integer, found the string "3"',
    });
    expect(issueAt(err, 'deployments[0].concurrency_limit')).toMatchObject({
      ...pos(text, '1.5'),
      message: 'expected an integer, found the number 1.5',
    });
    expect(issueAt(err, 'deployments[0].parameters').message).toBe('expected a mapping, found a list');
    expect(issueAt(err, 'deployments[0].description').message).toBe('expected a string, found the number 42');
    expect(issueAt(err, 'deployments[0].work_pool').message).toBe('expected a work pool name or { name, work_queue }, found the number 7');
    expect(issueAt(err, 'deployments[0].env.B').message).toBe('expected a string, number or boolean, found a mapping');
    expect(issueAt(err, 'deployments[0].env.bad-name').message).toBe('"bad-name" is not a valid environment variable name');
    expect(issueAt(err, 'deployments[0].identity.audiences').message).toBe('expected a list, found the string "sts.amazonaws.com"');
  });

  it('rejects numbers out of range', () => {
    const err = problems('deployments:\n  - name: a\n    entrypoint: a.ts:a\n    retries: -1\n    concurrency_limit: 0\n');
    expect(issueAt(err, 'deployments[0].retries').message).toBe('must be at least 0, found -1');
    expect(issueAt(err, 'deployments[0].concurrency_limit').message).toBe('must be at least 1, found 0');
  });

  it('reports missing required fields at the deployment', () => {
    const text = 'deployments:\n  - name: a\n  - entrypoint: b.ts:b\n';
    const err = problems(text);
    expect(issueAt(err, 'deployments[0].entrypoint')).toMatchObject({ ...pos(text, 'name: a'), message: 'is required' });
    expect(issueAt(err, 'deployments[1].name')).toMatchObject({ ...pos(text, 'entrypoint: b'), message: 'is required' });
  });

  it('rejects a malformed entrypoint and names the expected form', () => {
    const text = 'deployments:\n  - name: a\n    entrypoint: flows/etl.ts\n';
    expect(issueAt(problems(text), 'deployments[0].entrypoint')).toMatchObject({
      ...pos(text, 'flows/etl.ts'),
      message: '"flows/etl.ts" is not an entrypoint; expected "path/to/file.ts:exportName", e.g. "flows/etl.ts:nightlyEtl"',
    });
  });

  it('rejects names that cannot go into a URL or a token subject', () => {
    const err = problems('deployments:\n  - name: "etl:prod"\n    entrypoint: a.ts:a\n    environment: "prod env"\n');
    expect(issueAt(err, 'deployments[0].name').message).toMatch(/^"etl:prod" is not a valid deployment name; use letters, digits/);
    expect(issueAt(err, 'deployments[0].environment').message).toMatch(/^"prod env" is not a valid environment name/);
  });

  it('rejects duplicate deployment names at the second one', () => {
    const text = 'deployments:\n  - name: etl\n    entrypoint: a.ts:a\n  - name: etl\n    entrypoint: b.ts:b\n';
    expect(issueAt(problems(text), 'deployments[1].name')).toMatchObject({
      ...pos(text, 'etl', 2),
      message: 'deployment name "etl" is already used by deployments[0]; names must be unique',
    });
  });

  it('rejects schedule and schedules together, cron with interval, a schedule with neither, and anchor with cron', () => {
    const text = `deployments:
  - name: a
    entrypoint: a.ts:a
    schedule: { cron: "0 2 * * *" }
    schedules:
      - { cron: "0 3 * * *", interval: 10m }
      - { timezone: UTC }
      - { cron: "0 4 * * *", anchor: "2026-01-01T00:00:00Z" }
`;
    const err = problems(text);
    expect(issueAt(err, 'deployments[0].schedules')).toMatchObject({
      ...pos(text, 'schedules:'),
      message: 'use either `schedule` (one) or `schedules` (a list), not both',
    });
    expect(issueAt(err, 'deployments[0].schedules[0].interval')).toMatchObject({
      ...pos(text, 'interval'),
      message: expect.stringContaining('either `cron` or `interval`, not both'),
    });
    expect(issueAt(err, 'deployments[0].schedules[1]')).toMatchObject({
      ...pos(text, '{ timezone'),
      message: expect.stringContaining('needs `cron`'),
    });
    expect(issueAt(err, 'deployments[0].schedules[2].anchor').message).toBe('`anchor` applies to interval schedules only');
  });

  it('rejects an anchor that is not a date', () => {
    const err = problems('deployments:\n  - name: a\n    entrypoint: a.ts:a\n    schedule: { interval: 1h, anchor: "next tuesday" }\n');
    expect(issueAt(err, 'deployments[0].schedule.anchor').message).toMatch(/^"next tuesday" is not a date and time; use ISO 8601/);
  });

  it('rejects an empty file, a file without deployments, and an empty deployments list', () => {
    expect(problems('').message).toBe('tessera.yaml: 1 problem\ntessera.yaml:1:1  the file is empty; expected a `deployments:` list');
    expect(issueAt(problems('name: x\n'), 'deployments').message).toBe('is required');
    expect(issueAt(problems('deployments: []\n'), 'deployments').message).toBe('must not be empty');
    expect(issueAt(problems('deployments: hello\n'), 'deployments').message).toBe('expected a list, found the string "hello"');
    expect(problems('- a\n- b\n').issues[0]?.message).toBe('expected a mapping with a `deployments:` list, found a list');
  });

  it('reports invalid YAML at its position', () => {
    const err = problems('deployments:\n  - name: a\n    entrypoint: [a.ts:a\n');
    expect(err.code).toBe('ERR_CONFIG');
    expect(err.issues[0]?.message).toMatch(/^invalid YAML: /);
    expect((err.issues[0] as LocatedIssue).line).toBeGreaterThanOrEqual(3);
  });

  it('reports duplicate keys as invalid YAML', () => {
    const err = problems('deployments:\n  - name: a\n    name: b\n    entrypoint: a.ts:a\n');
    expect(err.issues[0]).toMatchObject({ line: 3, message: expect.stringMatching(/^invalid YAML: Map keys must be unique/) });
  });

  it('reports a missing file with ERR_CONFIG', () => {
    expect(() => loadProjectFile('nope/tessera.yaml', { cwd: '/tmp' })).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG', message: 'nope/tessera.yaml does not exist' }),
    );
  });

  it('reports every problem at once, in file order', () => {
    const text = `deployments:
  - name: b
    entrypoint: bad
    retries: x
  - name: c
    entrypoint: c.ts:c
    schedule: { cron: "0 25 * * *" }
    tgas: [x]
`;
    const err = problems(text);
    expect(err.message.split('\n')).toEqual([
      'tessera.yaml: 4 problems',
      `tessera.yaml:3:17  deployments[0].entrypoint: "bad" is not an entrypoint; expected "path/to/file.ts:exportName", e.g. "flows/etl.ts:nightlyEtl"`,
      `tessera.yaml:4:14  deployments[0].retries: expected an integer, found the string "x"`,
      `tessera.yaml:7:23  deployments[1].schedule.cron: "0 25 * * *" is not a valid cron expression (hour must be 0-23)`,
      `tessera.yaml:8:5  deployments[1].tgas: unknown key "tgas"; did you mean "tags"?`,
    ]);
  });
});
