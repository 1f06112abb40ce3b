/** Request-body schemas: validated at the edge with zod, published in the OpenAPI document. */
import { STATE_TYPES, SUB_TEMPLATE_KEYS } from '@tessera/core';
import { z } from 'zod';

/** A string a process can be given (an argument, a path, an environment value): no NUL byte, which spawn refuses. */
/** Tags: at most 50, each at most 100 characters. */
const tags = z.array(z.string().max(100)).max(50);

const processString = () => z.string().refine((v) => !v.includes('\u0000'), 'must not contain a NUL byte');

const name = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'use letters, digits, ".", "_" and "-", starting with a letter or digit');
const limit = z.number().int().min(0).nullable().optional();
const json = z.record(z.string(), z.unknown());

export const createWorkPool = z.object({ name, description: z.string().max(2000).optional(), concurrencyLimit: limit }).strict();
export const updateWorkPool = z
  .object({ description: z.string().max(2000).nullable().optional(), concurrencyLimit: limit, paused: z.boolean().optional() })
  .strict();
export const createWorkQueue = z.object({ name, priority: z.number().int().optional(), concurrencyLimit: limit }).strict();

const schedule = z.union([
  z.object({ cron: z.string().min(1).max(200), timezone: z.string().optional(), active: z.boolean().optional() }).strict(),
  z
    .object({
      interval: z.number().int().positive(),
      anchor: z.string().optional(),
      timezone: z.string().optional(),
      active: z.boolean().optional(),
    })
    .strict(),
]);

export const deploymentSpec = z
  .object({
    name,
    flowName: z.string().min(1).max(200),
    entrypoint: processString().pipe(z.string().regex(/^.+:[A-Za-z_$][\w$]*$/, 'expected path/to/file.ts:exportName')),
    path: processString().pipe(z.string().min(1)),
    workPool: z.string().min(1),
    workQueue: z.string().min(1).optional(),
    description: z.string().max(5000).optional(),
    parameters: json.optional(),
    parameterSchema: json.nullable().optional(),
    tags: tags.optional(),
    schedules: z.array(schedule).max(20).optional(),
    environment: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9._-]+$/)
      .optional(),
    project: z
      .string()
      .min(1)
      .max(100)
      .regex(/^[A-Za-z0-9._-]+$/)
      .optional(),
    identity: z
      .object({
        audiences: z.array(z.string().min(1).max(500)).max(50),
        maxLifetimeMs: z
          .number()
          .int()
          .min(60_000)
          .max(24 * 3_600_000)
          .optional(),
        algorithm: z.enum(['RS256', 'ES256']).optional(),
        subTemplate: z.array(z.enum(SUB_TEMPLATE_KEYS)).min(1).max(SUB_TEMPLATE_KEYS.length).optional(),
        awsSessionTags: z.boolean().optional(),
        tokenFiles: z
          .object({
            aws: z
              .object({
                roleArn: processString().pipe(
                  z.string().regex(/^arn:aws[\w-]*:iam::\d{12}:role\/.+$/, 'expected arn:aws:iam::ACCOUNT:role/NAME'),
                ),
                audience: z.string().optional(),
                lifetimeMs: z.number().int().optional(),
              })
              .strict()
              .optional(),
            gcp: z
              .object({
                audience: z.string().min(1),
                serviceAccountImpersonationUrl: z.url().optional(),
                tokenUrl: z.url().optional(),
                lifetimeMs: z.number().int().optional(),
              })
              .strict()
              .optional(),
            azure: z
              .object({
                clientId: processString().pipe(z.string().min(1)),
                tenantId: processString().pipe(z.string().min(1)),
                audience: z.string().optional(),
                lifetimeMs: z.number().int().optional(),
              })
              .strict()
              .optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
    concurrencyLimit: limit,
    retries: z.number().int().min(0).max(100).optional(),
    retryDelaysMs: z.array(z.number().int().min(0)).max(100).optional(),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), processString()).optional(),
  })
  .strict();

export const createRun = z
  .object({
    parameters: json.optional(),
    scheduledFor: z.string().max(40).optional(),
    idempotencyKey: z.string().min(1).max(200).optional(),
    tags: tags.optional(),
  })
  .strict();

export const createAdhocRun = z
  .object({
    flowName: z.string().min(1).max(200),
    parameters: json.optional(),
    tags: tags.optional(),
    maxRetries: z.number().int().min(0).max(100).optional(),
    retryDelaysMs: z.array(z.number().int().min(0)).max(100).optional(),
  })
  .strict();

/** A failure as a client reports it: bounded, as everything a run credential may send. */
const runError = z.object({
  name: z.string().max(200),
  message: z.string().max(10_000),
  stack: z.string().max(50_000).optional(),
  code: z.string().max(100).optional(),
});

/** An ISO-8601 time as a client sends it (a flow process's clock). */
const clientTime = z
  .string()
  .max(40)
  .regex(/^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})$/, 'expected an ISO-8601 time such as 2026-11-29T12:00:00.000Z');

export const proposeState = z
  .object({
    state: z
      .object({ type: z.enum(STATE_TYPES), name: z.string().max(64).optional(), message: z.string().max(10_000).optional() })
      .strict(),
    result: z.unknown().optional(),
    error: runError.optional(),
    scheduledFor: z.string().max(40).optional(),
  })
  .strict();

export const taskRunEvents = z
  .object({
    events: z
      .array(
        z.object({
          taskRunId: z.uuid(),
          flowRunId: z.string().max(36),
          taskKey: z.string().max(200),
          name: z.string().max(200),
          state: z.object({ type: z.enum(STATE_TYPES), name: z.string().max(64).optional(), message: z.string().max(10_000).optional() }),
          attempt: z.number().int().min(0),
          maxRetries: z.number().int().min(0),
          timestamp: clientTime,
          error: runError.optional(),
        }),
      )
      .max(5000),
  })
  .strict();

export const logs = z
  .object({
    entries: z
      .array(
        z.object({
          flowRunId: z.string().max(36),
          taskRunId: z.uuid().nullable().optional(),
          level: z.enum(['debug', 'info', 'warn', 'error']),
          message: z.string().max(1_000_000),
          timestamp: clientTime,
        }),
      )
      .max(5000),
  })
  .strict();

export const workerPoll = z
  .object({
    workerId: z.uuid(),
    workerName: z.string().min(1).max(200),
    capacity: z.number().int().min(0).max(1000),
    running: z.array(z.string().max(36)).max(1000),
    waitMs: z.number().int().min(0).optional(),
  })
  .strict();

export const identityTokenPreview = z
  .object({
    audience: z.string().min(1).max(1000),
    lifetime: z.union([z.number(), z.string().max(64)]).optional(),
    taskRunId: z.uuid().optional(),
    taskName: z.string().max(200).optional(),
  })
  .strict();

export const identityToken = z
  .object({
    audience: z.string().max(1000).optional(),
    lifetime: z.union([z.number(), z.string().max(64)]).optional(),
    taskRunId: z.uuid().optional(),
    taskName: z.string().max(200).optional(),
  })
  .strict();
