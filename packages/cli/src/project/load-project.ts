import { dirname } from 'node:path';
import type { DeploymentIdentity, ScheduleSpec } from '@tessera/core';
import * as z from 'zod';
import { ENTRYPOINT_RE, projectFileSchema, type RawDeployment } from './schema.js';
import {
  formatPath,
  type LocatedIssue,
  locateIssues,
  type PathSegment,
  type PendingIssue,
  readYamlSource,
  type SourceLocation,
  validateYaml,
} from './yaml-source.js';

/** One deployment from tessera.yaml, validated and compiled (durations in ms, camelCase). */
export interface ProjectDeployment {
  /** Position in the file's `deployments:` list, for locating errors found later. */
  index: number;
  name: string;
  /** As written: `path/to/file.ts:exportName`, relative to the file's directory. */
  entrypoint: string;
  entrypointFile: string;
  entrypointExport: string;
  workPool: string;
  workQueue?: string;
  schedules: ScheduleSpec[];
  parameters: Record<string, unknown>;
  tags: string[];
  description?: string;
  environment: string;
  project?: string;
  identity?: DeploymentIdentity;
  concurrencyLimit?: number | null;
  /** Overrides the flow's own retries when set. */
  retries?: number;
  /** Overrides the flow's own retry delays when set, ms. */
  retryDelaysMs?: number[];
  env?: Record<string, string>;
}

/** A loaded tessera.yaml. */
export interface ProjectFile {
  /** Absolute path of the file. */
  readonly path: string;
  /** Absolute directory of the file: entrypoints are relative to it, and it is the deployments' `path`. */
  readonly dir: string;
  /** The file as named in messages. */
  readonly displayName: string;
  readonly deployments: readonly ProjectDeployment[];
  /** Where a field is, e.g. `locate(['deployments', 1, 'work_pool'])`. */
  locate(path: readonly PathSegment[]): SourceLocation;
  /** A located issue for a field, for errors found after loading (unknown pool, bad entrypoint). */
  issue(path: readonly PathSegment[], message: string): LocatedIssue;
}

/** Options for {@link loadProjectFile}. */
export interface LoadProjectFileOptions {
  /** Directory that relative paths and displayed file names are relative to. @default process.cwd() */
  cwd?: string;
  /** The file's text, when already read (tests). */
  text?: string;
}

/** Default environment of a deployment. */
export const DEFAULT_ENVIRONMENT = 'dev';
/** Default work pool of a deployment; `tessera dev` creates it. */
export const DEFAULT_WORK_POOL = 'default';

/**
 * Loads and validates a `tessera.yaml` (the list of deployments, like prefect.yaml).
 *
 * Every problem in the file is reported at once, each with file, line, column and field path:
 * `tessera.yaml:14:5  deployments[1].schedule.cron: "0 25 * * *" is not a valid cron expression (hour must be 0-23)`.
 * Bare numbers are seconds for durations (`interval: 600`, `retry_delay: 30`); strings use units (`"10m"`).
 *
 * @throws ValidationError `ERR_CONFIG` whose `issues` are {@link LocatedIssue}s and whose message lists them.
 * @example
 * const project = loadProjectFile('tessera.yaml');
 * for (const d of project.deployments) console.log(d.name, d.entrypoint, d.workPool);
 */
export function loadProjectFile(path: string, options: LoadProjectFileOptions = {}): ProjectFile {
  const source = readYamlSource(path, {
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...(options.text !== undefined ? { text: options.text } : {}),
  });
  const structural = structuralIssues(source.data);
  // An empty file has one problem; the schema would only repeat it.
  const raw = validateYaml(source, source.data == null ? z.unknown() : projectFileSchema, structural) as z.output<typeof projectFileSchema>;
  const deployments = raw.deployments.map((d, i) => compileDeployment(d, i));
  return Object.freeze({
    path: source.path,
    dir: dirname(source.path),
    displayName: source.displayName,
    deployments: Object.freeze(deployments),
    locate: (p: readonly PathSegment[]) => source.locate(p),
    issue: (p: readonly PathSegment[], message: string) => locateIssues(source, [{ path: p, message }])[0] as LocatedIssue,
  });
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Rules that span several fields. They run on the raw data, whether or not the schema passed, so a
 * file's problems are all reported in one go.
 */
function structuralIssues(data: unknown): PendingIssue[] {
  const issues: PendingIssue[] = [];
  if (data === null || data === undefined) {
    return [{ path: [], message: 'the file is empty; expected a `deployments:` list' }];
  }
  if (!isObject(data) || !Array.isArray(data.deployments)) return issues;
  const seen = new Map<string, number>();
  data.deployments.forEach((d, i) => {
    if (!isObject(d)) return;
    const base: PathSegment[] = ['deployments', i];
    if (typeof d.name === 'string') {
      const first = seen.get(d.name);
      if (first !== undefined) {
        issues.push({
          path: [...base, 'name'],
          message: `deployment name ${JSON.stringify(d.name)} is already used by deployments[${first}]; names must be unique`,
        });
      } else seen.set(d.name, i);
    }
    if (d.schedule != null && d.schedules != null) {
      issues.push({ path: [...base, 'schedules'], key: true, message: 'use either `schedule` (one) or `schedules` (a list), not both' });
    }
    const schedules: [PathSegment[], unknown][] = [];
    if (d.schedule != null) schedules.push([[...base, 'schedule'], d.schedule]);
    if (Array.isArray(d.schedules)) {
      d.schedules.forEach((s, j) => {
        schedules.push([[...base, 'schedules', j], s]);
      });
    }
    for (const [p, s] of schedules) {
      if (!isObject(s)) continue;
      const hasCron = s.cron !== undefined;
      const hasInterval = s.interval !== undefined;
      if (hasCron && hasInterval)
        issues.push({
          path: [...p, 'interval'],
          key: true,
          message: 'a schedule has either `cron` or `interval`, not both; write two schedules',
        });
      else if (!hasCron && !hasInterval)
        issues.push({ path: p, message: 'a schedule needs `cron` (e.g. "0 2 * * *") or `interval` (e.g. "10m")' });
      if (hasCron && s.anchor !== undefined)
        issues.push({ path: [...p, 'anchor'], key: true, message: '`anchor` applies to interval schedules only' });
    }
  });
  return issues;
}

function compileDeployment(d: RawDeployment, index: number): ProjectDeployment {
  const m = ENTRYPOINT_RE.exec(d.entrypoint);
  const schedules = [...(d.schedule ? [d.schedule] : []), ...(d.schedules ?? [])].map((s): ScheduleSpec => {
    const common = {
      ...(s.timezone !== undefined ? { timezone: s.timezone } : {}),
      ...(s.active !== undefined ? { active: s.active } : {}),
    };
    if (s.cron !== undefined) return { cron: s.cron, ...common };
    return { interval: s.interval as number, ...(s.anchor !== undefined ? { anchor: s.anchor } : {}), ...common };
  });
  const out: ProjectDeployment = {
    index,
    name: d.name,
    entrypoint: d.entrypoint,
    entrypointFile: m?.groups?.file ?? d.entrypoint,
    entrypointExport: m?.groups?.export ?? '',
    workPool: d.work_pool?.name ?? DEFAULT_WORK_POOL,
    schedules,
    parameters: d.parameters ?? {},
    tags: d.tags ?? [],
    environment: d.environment ?? DEFAULT_ENVIRONMENT,
  };
  if (d.work_pool?.work_queue !== undefined) out.workQueue = d.work_pool.work_queue;
  if (d.description != null) out.description = d.description;
  if (d.project !== undefined) out.project = d.project;
  if (d.identity) out.identity = compileIdentity(d.identity);
  if (d.concurrency_limit !== undefined) out.concurrencyLimit = d.concurrency_limit;
  if (d.retries !== undefined) out.retries = d.retries;
  if (d.retry_delay !== undefined) out.retryDelaysMs = d.retry_delay;
  if (d.env) out.env = Object.fromEntries(Object.entries(d.env).map(([k, v]) => [k, String(v)]));
  return out;
}

function compileIdentity(i: NonNullable<RawDeployment['identity']>): DeploymentIdentity {
  const out: DeploymentIdentity = { audiences: i.audiences };
  if (i.max_lifetime !== undefined) out.maxLifetimeMs = i.max_lifetime;
  if (i.algorithm !== undefined) out.algorithm = i.algorithm;
  if (i.sub_template !== undefined) out.subTemplate = i.sub_template;
  if (i.aws_session_tags !== undefined) out.awsSessionTags = i.aws_session_tags;
  const f = i.token_files;
  if (f) {
    const lifetime = (ms: number | undefined) => (ms !== undefined ? { lifetimeMs: ms } : {});
    out.tokenFiles = {
      ...(f.aws
        ? { aws: { roleArn: f.aws.role_arn, ...(f.aws.audience ? { audience: f.aws.audience } : {}), ...lifetime(f.aws.lifetime) } }
        : {}),
      ...(f.gcp
        ? {
            gcp: {
              audience: f.gcp.audience,
              ...(f.gcp.service_account_impersonation_url
                ? { serviceAccountImpersonationUrl: f.gcp.service_account_impersonation_url }
                : {}),
              ...(f.gcp.token_url ? { tokenUrl: f.gcp.token_url } : {}),
              ...lifetime(f.gcp.lifetime),
            },
          }
        : {}),
      ...(f.azure
        ? {
            azure: {
              clientId: f.azure.client_id,
              tenantId: f.azure.tenant_id,
              ...(f.azure.audience ? { audience: f.azure.audience } : {}),
              ...lifetime(f.azure.lifetime),
            },
          }
        : {}),
    };
  }
  return out;
}

export { formatPath };
