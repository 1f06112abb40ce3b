/**
 * The REST API's request and response shapes: the one contract between server, worker, SDK and CLI.
 * Times are ISO-8601 strings in UTC; durations are milliseconds.
 */
import type { State, StateCause, StateType } from './states.js';

export interface WorkPool {
  id: string;
  name: string;
  description: string | null;
  concurrencyLimit: number | null;
  paused: boolean;
  createdAt: string;
  /** Runs of this pool currently Pending, Running or Cancelling. */
  activeRuns?: number;
  queues?: WorkQueue[];
}

export interface WorkQueue {
  id: string;
  pool: string;
  name: string;
  /** Lower numbers are claimed first. */
  priority: number;
  concurrencyLimit: number | null;
}

export interface CreateWorkPoolRequest {
  name: string;
  description?: string;
  concurrencyLimit?: number | null;
}

export interface UpdateWorkPoolRequest {
  description?: string | null;
  concurrencyLimit?: number | null;
  paused?: boolean;
}

export interface CreateWorkQueueRequest {
  name: string;
  priority?: number;
  concurrencyLimit?: number | null;
}

export interface Flow {
  id: string;
  name: string;
  createdAt: string;
}

export type ScheduleSpec =
  | { cron: string; timezone?: string; active?: boolean }
  | { interval: number; anchor?: string; timezone?: string; active?: boolean };

export interface Schedule {
  id: string;
  deploymentId: string;
  cron: string | null;
  intervalMs: number | null;
  anchor: string | null;
  timezone: string;
  active: boolean;
  createdBy: StateCause | null;
}

/** Signing algorithms a deployment may choose. RS256 (the default) is accepted by every relying party. */
export type TokenAlgorithm = 'RS256' | 'ES256';

/** Keys a `sub` template may use, in the order given. See docs/identity.md. */
export const SUB_TEMPLATE_KEYS = ['workspace', 'project', 'flow', 'deployment', 'deployment_id', 'environment', 'work_pool'] as const;
export type SubTemplateKey = (typeof SUB_TEMPLATE_KEYS)[number];

/** Token files the worker projects into a run's environment for cloud SDKs, refreshed before 80% of their lifetime. */
export interface TokenFilesSpec {
  /** `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` + `AWS_ROLE_SESSION_NAME`. */
  aws?: { roleArn: string; audience?: string; lifetimeMs?: number };
  /** A Google `external_account` credential file (`GOOGLE_APPLICATION_CREDENTIALS`). */
  gcp?: { audience: string; serviceAccountImpersonationUrl?: string; tokenUrl?: string; lifetimeMs?: number };
  /** `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID` + `AZURE_TENANT_ID`. */
  azure?: { clientId: string; tenantId: string; audience?: string; lifetimeMs?: number };
}

/** The clouds a {@link TokenFilesSpec} can name. */
export type TokenFileCloud = keyof TokenFilesSpec;

/**
 * The audience each cloud's token file asks for when its `audience` is not set: what AWS STS and
 * Microsoft Entra expect by default. GCP has none: its `audience` (the workload identity provider) is required.
 */
export const DEFAULT_TOKEN_FILE_AUDIENCES = { aws: 'sts.amazonaws.com', azure: 'api://AzureADTokenExchange' } as const;

/**
 * Lifetime of an Azure token file when none is set, ms (capped by the deployment's maximum). The
 * Azure SDKs cache the file's content for 5 to 10 minutes, so a short token refreshed at 80% could
 * be presented after it expired (AADSTS700024); one hour is what AKS workload identity projects.
 * AWS and GCP SDKs read the file at each exchange: their files use the server's default (5 minutes).
 */
export const DEFAULT_AZURE_TOKEN_FILE_LIFETIME_MS = 3_600_000;

/**
 * The audience of each token file a spec asks for, defaults applied, in the order aws, gcp, azure.
 * Used by the server (every audience must be in `identity.audiences`) and by the worker (what it asks for).
 */
export function tokenFileAudiences(spec: TokenFilesSpec): { cloud: TokenFileCloud; audience: string }[] {
  const out: { cloud: TokenFileCloud; audience: string }[] = [];
  if (spec.aws) out.push({ cloud: 'aws', audience: spec.aws.audience ?? DEFAULT_TOKEN_FILE_AUDIENCES.aws });
  if (spec.gcp) out.push({ cloud: 'gcp', audience: spec.gcp.audience });
  if (spec.azure) out.push({ cloud: 'azure', audience: spec.azure.audience ?? DEFAULT_TOKEN_FILE_AUDIENCES.azure });
  return out;
}

/** Identity settings of a deployment. */
export interface DeploymentIdentity {
  /** Audiences a run of this deployment may request tokens for. Empty: no identity tokens. */
  audiences: string[];
  /** Maximum lifetime a run may ask for, ms. @default 3600000 */
  maxLifetimeMs?: number;
  /** @default 'RS256' */
  algorithm?: TokenAlgorithm;
  /** Keys of the `sub` template (version 1), overriding the workspace's. */
  subTemplate?: SubTemplateKey[];
  /** Adds the `https://aws.amazon.com/tags` claim for AWS ABAC. @default false */
  awsSessionTags?: boolean;
  tokenFiles?: TokenFilesSpec;
}

/** What `tessera deploy` sends for one deployment (already validated and resolved). */
export interface DeploymentSpec {
  name: string;
  flowName: string;
  /** `path/to/file.ts:exportName`, path relative to `path`. */
  entrypoint: string;
  /** Absolute working directory the worker runs the entrypoint from. */
  path: string;
  workPool: string;
  workQueue?: string;
  description?: string;
  parameters?: Record<string, unknown>;
  /** JSON Schema of the flow's parameters, derived from its zod schema at deploy time. */
  parameterSchema?: Record<string, unknown> | null;
  tags?: string[];
  schedules?: ScheduleSpec[];
  environment?: string;
  /** Project the deployment belongs to (a claim in its tokens). @default 'default' */
  project?: string;
  identity?: DeploymentIdentity;
  concurrencyLimit?: number | null;
  /** Flow-level retries (from the flow's options unless overridden). */
  retries?: number;
  /** Delay before each retry, ms; the last entry repeats. */
  retryDelaysMs?: number[];
  /** Environment variables for the run's process. Not secrets: they are stored in plain text. */
  env?: Record<string, string>;
}

export interface Deployment
  extends Required<Omit<DeploymentSpec, 'schedules' | 'workQueue' | 'description' | 'parameterSchema' | 'concurrencyLimit'>> {
  /** Immutable id: survives renames and redeploys; never reused. */
  id: string;
  flowId: string;
  workQueue: string | null;
  description: string | null;
  parameterSchema: Record<string, unknown> | null;
  concurrencyLimit: number | null;
  schedules: Schedule[];
  createdAt: string;
  updatedAt: string;
}

export type TriggerKind = 'manual' | 'schedule' | 'adhoc' | 'api';

export interface RunError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
}

export interface FlowRun {
  id: string;
  name: string;
  flowId: string;
  flowName: string;
  deploymentId: string | null;
  deploymentName: string | null;
  workPool: string | null;
  workQueue: string | null;
  state: State;
  parameters: Record<string, unknown>;
  /** 1-based attempt number; 0 before the first attempt starts. */
  attempt: number;
  maxRetries: number;
  retryDelaysMs: number[];
  expectedStartTime: string;
  nextScheduledStartTime: string | null;
  startTime: string | null;
  endTime: string | null;
  workerId: string | null;
  workerName: string | null;
  triggerKind: TriggerKind;
  triggeredBy: StateCause;
  result: unknown;
  error: RunError | null;
  tags: string[];
  idempotencyKey: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface StateHistoryEntry extends State {
  id: string;
  attempt: number;
}

export interface TaskRun {
  id: string;
  flowRunId: string;
  taskKey: string;
  name: string;
  state: State;
  attempt: number;
  maxRetries: number;
  startTime: string | null;
  endTime: string | null;
  error: RunError | null;
  createdAt: string;
}

export interface LogEntry {
  id?: number;
  flowRunId: string;
  taskRunId?: string | null;
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  timestamp: string;
}

export interface CreateRunRequest {
  parameters?: Record<string, unknown>;
  /** When to run; default now. */
  scheduledFor?: string;
  /** Deduplicates: a second request with the same key returns the first run. */
  idempotencyKey?: string;
  tags?: string[];
}

/** Starts a run that the caller executes itself (`tessera run`). */
export interface CreateAdhocRunRequest {
  flowName: string;
  parameters?: Record<string, unknown>;
  tags?: string[];
  maxRetries?: number;
  retryDelaysMs?: number[];
}

export interface AdhocRunResponse {
  run: FlowRun;
  /** The run credential for attempt 1. Secret: never log it. */
  credential: string;
}

export interface ProposeStateRequest {
  state: { type: StateType; name?: string; message?: string };
  /** JSON return value, with COMPLETED. */
  result?: unknown;
  error?: RunError;
  /** With SCHEDULED from PAUSED etc.; ISO time. */
  scheduledFor?: string;
}

export interface ProposeStateResponse {
  /** ACCEPT: the proposed state is now current; ABORT: nothing changed, see `state`. */
  status: 'ACCEPT' | 'ABORT';
  run: FlowRun;
  /** Set when the server's retry rule turned a failure into AwaitingRetry. */
  retryScheduled?: boolean;
}

export interface TaskRunEvent {
  taskRunId: string;
  flowRunId: string;
  taskKey: string;
  name: string;
  state: { type: StateType; name?: string; message?: string };
  attempt: number;
  maxRetries: number;
  timestamp: string;
  error?: RunError;
}

export interface WorkerPollRequest {
  workerId: string;
  workerName: string;
  /** How many runs the worker can start now (0: heartbeat and cancellations only). */
  capacity: number;
  /** Runs the worker is executing now. */
  running: string[];
  /** Longest the server may hold the request open, ms. */
  waitMs?: number;
}

/** What a worker needs to start a run. */
export interface ClaimedRun {
  run: FlowRun;
  /** The run credential for this attempt. Secret: never log it. */
  credential: string;
  entrypoint: string;
  path: string;
  env: Record<string, string>;
  /** Token files the worker projects for cloud SDKs before starting the run: the deployment's `identity.tokenFiles`. */
  tokenFiles?: TokenFilesSpec;
}

export interface WorkerPollResponse {
  runs: ClaimedRun[];
  /** Runs this worker holds that must be cancelled now. */
  cancel: string[];
  /** Runs this worker reported that the server no longer expects it to run (terminal or reassigned). */
  forget: string[];
}

export interface Worker {
  id: string;
  name: string;
  pool: string;
  lastHeartbeatAt: string;
  status: 'online' | 'offline';
  createdAt: string;
}

export interface IdentityTokenRequest {
  audience: string;
  /** Requested lifetime, ms or duration string; default 5 minutes. */
  lifetime?: number | string;
  /** For task-scoped tokens. */
  taskRunId?: string;
  taskName?: string;
}

export interface IdentityTokenResponse {
  token: string;
  tokenType: 'JWT';
  expiresAt: string;
  jti: string;
  kid: string;
  alg: string;
  sub: string;
  aud: string;
}

export interface Page<T> {
  items: T[];
}
