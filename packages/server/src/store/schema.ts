/**
 * Table shapes as Kysely sees them. Portable types only: times are ISO-8601 UTC strings (they sort
 * as text on every dialect), booleans are 0/1 integers, JSON is text.
 */
import type { Generated } from 'kysely';
import type { AuthDatabase } from './schema-auth.js';
import type { SessionDatabase } from './schema-sessions.js';

export interface WorkPoolTable {
  id: string;
  name: string;
  description: string | null;
  concurrency_limit: number | null;
  paused: number;
  created_at: string;
}

export interface WorkQueueTable {
  id: string;
  pool_id: string;
  name: string;
  priority: number;
  concurrency_limit: number | null;
  created_at: string;
}

export interface FlowTable {
  id: string;
  name: string;
  created_at: string;
}

export interface DeploymentTable {
  id: string;
  name: string;
  flow_id: string;
  entrypoint: string;
  path: string;
  work_pool_id: string;
  work_queue: string | null;
  description: string | null;
  parameters: string;
  parameter_schema: string | null;
  tags: string;
  environment: string;
  project: string;
  identity: string;
  concurrency_limit: number | null;
  retries: number;
  retry_delays: string;
  env: string;
  created_at: string;
  updated_at: string;
}

export interface ScheduleTable {
  id: string;
  deployment_id: string;
  /** Stable fingerprint of the schedule's definition, so redeploying keeps its id. */
  fingerprint: string;
  cron: string | null;
  interval_ms: number | null;
  anchor: string | null;
  timezone: string;
  active: number;
  created_by: string;
  created_at: string;
}

export interface FlowRunTable {
  id: string;
  name: string;
  flow_id: string;
  deployment_id: string | null;
  work_pool_id: string | null;
  work_queue: string | null;
  priority: number;
  state_type: string;
  state_name: string;
  state_message: string | null;
  state_timestamp: string;
  parameters: string;
  attempt: number;
  max_retries: number;
  retry_delays: string;
  expected_start_time: string;
  next_scheduled_start_time: string | null;
  start_time: string | null;
  end_time: string | null;
  worker_id: string | null;
  claimed_at: string | null;
  trigger_kind: string;
  triggered_by: string;
  result: string | null;
  error: string | null;
  tags: string;
  idempotency_key: string | null;
  created_at: string;
  updated_at: string;
}

export interface FlowRunStateTable {
  id: Generated<number>;
  flow_run_id: string;
  attempt: number;
  type: string;
  name: string;
  message: string | null;
  timestamp: string;
  cause: string;
}

export interface TaskRunTable {
  id: string;
  flow_run_id: string;
  task_key: string;
  name: string;
  state_type: string;
  state_name: string;
  state_message: string | null;
  state_timestamp: string;
  attempt: number;
  max_retries: number;
  start_time: string | null;
  end_time: string | null;
  error: string | null;
  created_at: string;
}

export interface LogTable {
  id: Generated<number>;
  flow_run_id: string;
  task_run_id: string | null;
  level: string;
  message: string;
  timestamp: string;
}

export interface WorkerTable {
  id: string;
  name: string;
  pool_id: string;
  last_heartbeat_at: string;
  created_at: string;
  /** `principalId` of who polls as this worker; null on rows older than migration 0008. */
  owner: string | null;
}

export interface RunCredentialTable {
  /** SHA-256 of the credential, hex. The credential itself is never stored. */
  hash: string;
  flow_run_id: string;
  attempt: number;
  worker_id: string | null;
  created_at: string;
  revoked_at: string | null;
}

export interface SigningKeyTable {
  kid: string;
  alg: string;
  public_jwk: string;
  created_at: string;
  /** When this key may start signing (published before). */
  activates_at: string;
  /** When this key stopped signing; null while active. */
  retired_at: string | null;
  /** When this key can leave the JWKS: every token it signed has expired. */
  expires_at: string | null;
  /** When this key was revoked: it left the JWKS at once (0003-keys). */
  revoked_at: string | null;
  /** The replica that generated the key and alone holds its private half; null before 0005-replicas. */
  replica_id: string | null;
}

/** A server process sharing the database (0005-replicas). */
export interface ReplicaTable {
  id: string;
  url: string | null;
  host: string | null;
  pid: number | null;
  started_at: string;
  /** Written every background-loop tick: a replica silent for long is dead and its keys are retired. */
  last_seen_at: string;
  stopped_at: string | null;
}

/** A request to rotate signing keys, applied by every replica to its own keys (0005-replicas). */
export interface KeyRotationTable {
  id: string;
  requested_at: string;
  /** Null: every replica; otherwise that replica only (a scheduled rotation of its keys). */
  replica_id: string | null;
  /** JSON array of algorithms. */
  algorithms: string;
  revoke_current: number;
  /** JSON `{ kind, id, label? }`. */
  requested_by: string;
}

export interface IssuedTokenTable {
  jti: string;
  flow_run_id: string;
  attempt: number;
  task_run_id: string | null;
  aud: string;
  sub: string;
  kid: string;
  issued_at: string;
  expires_at: string;
  /** Set when the run's identity was revoked: introspection reports the token inactive (0004-identity). */
  revoked_at: string | null;
  /** RFC 7638 thumbprint of the DPoP key the token is bound to (`cnf.jkt`), if any (0004-identity). */
  cnf_jkt: string | null;
}

/** Identity settings of a workspace (0004-identity). */
export interface WorkspaceSettingsTable {
  workspace: string;
  /** JSON: `{ subTemplate?: SubTemplateKey[] }`. */
  identity: string;
  updated_at: string;
  /** JSON StateCause of who changed it. */
  updated_by: string;
}

/** A run whose identity was revoked: no more tokens, and its tokens are inactive (0004-identity). */
export interface IdentityRevocationTable {
  flow_run_id: string;
  revoked_at: string;
  /** JSON StateCause. */
  revoked_by: string;
  reason: string | null;
}

/** DPoP proofs seen recently, to refuse a replay (0004-identity). */
export interface DpopProofTable {
  /** SHA-256 hex of `jkt + " " + jti`. */
  id: string;
  expires_at: string;
}

export interface Database extends AuthDatabase, SessionDatabase {
  work_pools: WorkPoolTable;
  work_queues: WorkQueueTable;
  flows: FlowTable;
  deployments: DeploymentTable;
  schedules: ScheduleTable;
  flow_runs: FlowRunTable;
  flow_run_states: FlowRunStateTable;
  task_runs: TaskRunTable;
  logs: LogTable;
  workers: WorkerTable;
  run_credentials: RunCredentialTable;
  signing_keys: SigningKeyTable;
  issued_tokens: IssuedTokenTable;
  workspace_settings: WorkspaceSettingsTable;
  identity_revocations: IdentityRevocationTable;
  dpop_proofs: DpopProofTable;
  replicas: ReplicaTable;
  key_rotations: KeyRotationTable;
}
