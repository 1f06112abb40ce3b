/**
 * The schema of `tessera.yaml`. One zod schema validates the whole file; custom checks (cron
 * expressions, durations, time zones) live next to the field they check, so every message is
 * reported at that field's line and column.
 */
import { parseDuration, SUB_TEMPLATE_KEYS } from '@tessera/core';
import { Cron } from 'croner';
import * as z from 'zod';
import { didYouMean } from '../lib/suggest.js';
import { describeValue } from './yaml-source.js';

/**
 * A strict mapping: unknown keys are errors, with a did-you-mean. The unknown-keys message holds
 * one line per key, in the order of `issue.keys`, which `validateYaml` splits back apart.
 */
export function strictObject<T extends z.core.$ZodLooseShape>(shape: T, what?: string) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (iss) => {
      if (iss.code === 'unrecognized_keys') {
        return iss.keys
          .map((k) => {
            const guess = didYouMean(k, known);
            return guess ? `unknown key "${k}"; did you mean "${guess}"?` : `unknown key "${k}"; expected one of: ${known.join(', ')}`;
          })
          .join('\n');
      }
      if (iss.code === 'invalid_type' && what && iss.input !== undefined) return `expected ${what}, found ${describeValue(iss.input)}`;
      return undefined;
    },
  });
}

const CRON_RANGES: Record<string, string> = {
  second: 'second must be 0-59',
  minute: 'minute must be 0-59',
  hour: 'hour must be 0-23',
  day: 'day of month must be 1-31',
  month: 'month must be 1-12 or JAN-DEC',
  dayOfWeek: 'day of week must be 0-7 or SUN-SAT',
};

/**
 * Why `expr` is not a usable cron expression, or `undefined` when it is. Uses croner, the same
 * parser the server's scheduler uses, so what passes here is what the server accepts.
 */
export function cronProblem(expr: string, timezone?: string): string | undefined {
  let job: Cron;
  try {
    job = new Cron(expr, { paused: true, ...(timezone ? { timezone } : {}) });
  } catch (e) {
    const msg = (e as Error).message.replace(/^CronPattern:\s*/, '');
    const field = /Invalid value for (\w+)/.exec(msg)?.[1];
    let hint: string;
    if (field && CRON_RANGES[field]) hint = CRON_RANGES[field];
    else if (/five or six/.test(msg)) hint = 'expected 5 fields "minute hour day-of-month month day-of-week", or 6 with seconds first';
    else hint = msg;
    return `${JSON.stringify(expr)} is not a valid cron expression (${hint})`;
  }
  const next = job.nextRun();
  job.stop();
  if (next === null) return `${JSON.stringify(expr)} never matches a date (e.g. February 30); check day of month and month`;
  return undefined;
}

/** Why `tz` is not an IANA time zone, or `undefined`. */
export function timeZoneProblem(tz: string): string | undefined {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return undefined;
  } catch {
    return `${JSON.stringify(tz)} is not a known IANA time zone; use e.g. "UTC", "Europe/Paris" or "America/New_York"`;
  }
}

/**
 * A duration as written in tessera.yaml: a string such as `"30s"`, `"10m"`, `"1h30m"`, or a bare
 * number of **seconds** (as in prefect.yaml). Compiles to milliseconds.
 */
/**
 * Parses a duration as written in tessera.yaml: a string such as `"30s"`, `"10m"`, `"1h30m"`, or a
 * bare number of **seconds** (as in prefect.yaml). Returns milliseconds, or the problem as a message.
 */
export function parseYamlDuration(v: unknown, options: { positive?: boolean } = {}): { ms: number } | { problem: string } {
  let ms: number | undefined;
  if (typeof v === 'number' || typeof v === 'string') {
    try {
      ms = typeof v === 'number' ? parseDuration(v * 1000) : parseDuration(v);
    } catch {
      ms = undefined;
    }
  }
  if (ms === undefined) {
    if (v === undefined) return { problem: 'is required' };
    const found = typeof v === 'string' ? JSON.stringify(v) : describeValue(v);
    return { problem: `${found} is not a valid duration; use e.g. "30s", "10m", "1h30m", or a number of seconds` };
  }
  if (options.positive && ms <= 0) return { problem: `must be longer than zero, found ${JSON.stringify(v)}` };
  return { ms };
}

/** A duration field (see {@link parseYamlDuration}); compiles to milliseconds. */
export function durationField(options: { positive?: boolean } = {}) {
  return z.unknown().transform((v, ctx) => {
    const r = parseYamlDuration(v, options);
    if ('problem' in r) {
      ctx.addIssue({ code: 'custom', message: r.problem });
      return z.NEVER;
    }
    return r.ms;
  });
}

/** One duration or a list of them (`retry_delay: 30s` or `retry_delay: [10s, 1m, 5m]`); compiles to a list of ms. */
export function durationListField() {
  return z.unknown().transform((v, ctx) => {
    const items = Array.isArray(v) ? v : [v];
    if (items.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'must not be empty' });
      return z.NEVER;
    }
    const out: number[] = [];
    items.forEach((item, i) => {
      const r = parseYamlDuration(item);
      if ('problem' in r) ctx.addIssue({ code: 'custom', message: r.problem, path: Array.isArray(v) ? [i] : [] });
      else out.push(r.ms);
    });
    return out.length === items.length ? out : z.NEVER;
  });
}

/** An integer; "expected an integer" whatever the wrong input. */
const integer = () =>
  z.int({
    error: (iss) =>
      iss.code === 'invalid_type' && iss.input !== undefined ? `expected an integer, found ${describeValue(iss.input)}` : undefined,
  });

/** Deployment, pool and environment names end up in URLs and in the token `sub`, so they stay simple. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const name = (what: string) =>
  z.string().regex(NAME_RE, {
    error: (iss) =>
      `${JSON.stringify(iss.input)} is not a valid ${what}; use letters, digits, ".", "_" and "-" (at most 63 characters, starting with a letter or digit)`,
  });

/** `path/to/file.ts:exportName`. */
export const ENTRYPOINT_RE = /^(?<file>.+):(?<export>[A-Za-z_$][\w$]*)$/;

const entrypoint = z.string().regex(ENTRYPOINT_RE, {
  error: (iss) =>
    `${JSON.stringify(iss.input)} is not an entrypoint; expected "path/to/file.ts:exportName", e.g. "flows/etl.ts:nightlyEtl"`,
});

const cron = z.string().superRefine((expr, ctx) => {
  const problem = cronProblem(expr);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const timezone = z.string().superRefine((tz, ctx) => {
  const problem = timeZoneProblem(tz);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const anchor = z.string().transform((s, ctx) => {
  const t = Date.parse(s);
  if (Number.isNaN(t)) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(s)} is not a date and time; use ISO 8601, e.g. "2026-01-01T02:00:00Z"` });
    return z.NEVER;
  }
  return new Date(t).toISOString();
});

/** One schedule: `{ cron, timezone? }` or `{ interval, anchor?, timezone? }`. */
export const scheduleSchema = strictObject(
  {
    cron: cron.optional(),
    interval: durationField({ positive: true }).optional(),
    anchor: anchor.optional(),
    timezone: timezone.optional(),
    active: z.boolean().optional(),
  },
  'a mapping such as { cron: "0 2 * * *" } or { interval: "10m" }',
);

const workPool = z.preprocess(
  (v) => (typeof v === 'string' ? { name: v } : v),
  strictObject(
    { name: name('work pool name'), work_queue: name('work queue name').optional() },
    'a work pool name or { name, work_queue }',
  ),
);

const tokenFiles = strictObject(
  {
    aws: strictObject(
      { role_arn: z.string().min(1), audience: z.string().min(1).optional(), lifetime: durationField({ positive: true }).optional() },
      'a mapping such as { role_arn: arn:aws:iam::123456789012:role/etl }',
    ).optional(),
    gcp: strictObject(
      {
        audience: z.string().min(1),
        service_account_impersonation_url: z.string().min(1).optional(),
        token_url: z.string().min(1).optional(),
        lifetime: durationField({ positive: true }).optional(),
      },
      'a mapping such as { audience: //iam.googleapis.com/projects/…/providers/tessera }',
    ).optional(),
    azure: strictObject(
      {
        client_id: z.string().min(1),
        tenant_id: z.string().min(1),
        audience: z.string().min(1).optional(),
        lifetime: durationField({ positive: true }).optional(),
      },
      'a mapping such as { client_id: …, tenant_id: … }',
    ).optional(),
  },
  'a mapping with aws, gcp and/or azure',
);

const identity = strictObject(
  {
    audiences: z.array(z.string().min(1)),
    max_lifetime: durationField({ positive: true }).optional(),
    algorithm: z.enum(['RS256', 'ES256']).optional(),
    sub_template: z.array(z.enum(SUB_TEMPLATE_KEYS)).min(1).optional(),
    aws_session_tags: z.boolean().optional(),
    token_files: tokenFiles.optional(),
  },
  'a mapping such as { audiences: [sts.amazonaws.com], max_lifetime: 1h }',
);

const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const envVars = z.record(
  z.string().regex(ENV_KEY_RE, { error: (iss) => `${JSON.stringify(iss.input)} is not a valid environment variable name` }),
  z.union([z.string(), z.number(), z.boolean()], {
    error: (iss) => `expected a string, number or boolean, found ${describeValue(iss.input)}`,
  }),
);

/** One entry of `deployments:`. Optional collections also accept an empty value (`tags:`). */
export const deploymentSchema = strictObject(
  {
    name: name('deployment name'),
    entrypoint,
    work_pool: workPool.optional(),
    schedule: scheduleSchema.nullish(),
    schedules: z.array(scheduleSchema).nullish(),
    parameters: z.record(z.string(), z.unknown()).nullish(),
    tags: z.array(z.string().min(1)).nullish(),
    description: z.string().nullish(),
    environment: name('environment name').optional(),
    project: name('project name').optional(),
    identity: identity.nullish(),
    concurrency_limit: integer().min(1).nullable().optional(),
    retries: integer().min(0).max(100).optional(),
    retry_delay: durationListField().optional(),
    env: envVars.nullish(),
  },
  'a mapping with at least name and entrypoint',
);

/** The whole file. `definitions` holds YAML anchors to reuse (as in prefect.yaml) and is otherwise ignored. */
export const projectFileSchema = strictObject(
  {
    deployments: z.array(deploymentSchema).min(1),
    definitions: z.unknown().optional(),
  },
  'a mapping with a `deployments:` list',
);

/** Keys of a deployment entry, for did-you-mean elsewhere. */
export const DEPLOYMENT_KEYS = Object.keys(deploymentSchema.shape);

export type RawProjectFile = z.output<typeof projectFileSchema>;
export type RawDeployment = z.output<typeof deploymentSchema>;
