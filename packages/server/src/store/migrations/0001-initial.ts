import type { Kysely } from 'kysely';
import type { StoreDialect } from '../dialect.js';

/** The first schema. Portable DDL only: text, integer, bigint-free, no dialect-specific types. */
export async function up(db: Kysely<unknown>, dialect: StoreDialect): Promise<void> {
  await db.schema
    .createTable('work_pools')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(200)', (c) => c.notNull().unique())
    .addColumn('description', 'text')
    .addColumn('concurrency_limit', 'integer')
    .addColumn('paused', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('work_queues')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('pool_id', 'varchar(36)', (c) => c.notNull().references('work_pools.id'))
    .addColumn('name', 'varchar(200)', (c) => c.notNull())
    .addColumn('priority', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('concurrency_limit', 'integer')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addUniqueConstraint('work_queues_pool_name', ['pool_id', 'name'])
    .execute();

  await db.schema
    .createTable('flows')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(200)', (c) => c.notNull().unique())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('deployments')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(200)', (c) => c.notNull().unique())
    .addColumn('flow_id', 'varchar(36)', (c) => c.notNull().references('flows.id'))
    .addColumn('entrypoint', 'text', (c) => c.notNull())
    .addColumn('path', 'text', (c) => c.notNull())
    .addColumn('work_pool_id', 'varchar(36)', (c) => c.notNull().references('work_pools.id'))
    .addColumn('work_queue', 'varchar(200)')
    .addColumn('description', 'text')
    .addColumn('parameters', 'text', (c) => c.notNull())
    .addColumn('parameter_schema', 'text')
    .addColumn('tags', 'text', (c) => c.notNull())
    .addColumn('environment', 'varchar(100)', (c) => c.notNull())
    .addColumn('identity', 'text', (c) => c.notNull())
    .addColumn('concurrency_limit', 'integer')
    .addColumn('retries', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('retry_delays', 'text', (c) => c.notNull())
    .addColumn('env', 'text', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('schedules')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('deployment_id', 'varchar(36)', (c) => c.notNull().references('deployments.id').onDelete('cascade'))
    .addColumn('fingerprint', 'varchar(128)', (c) => c.notNull())
    .addColumn('cron', 'varchar(200)')
    .addColumn('interval_ms', 'integer')
    .addColumn('anchor', 'varchar(32)')
    .addColumn('timezone', 'varchar(100)', (c) => c.notNull())
    .addColumn('active', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addUniqueConstraint('schedules_deployment_fingerprint', ['deployment_id', 'fingerprint'])
    .execute();

  await db.schema
    .createTable('flow_runs')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(200)', (c) => c.notNull())
    .addColumn('flow_id', 'varchar(36)', (c) => c.notNull().references('flows.id'))
    .addColumn('deployment_id', 'varchar(36)', (c) => c.references('deployments.id').onDelete('set null'))
    .addColumn('work_pool_id', 'varchar(36)', (c) => c.references('work_pools.id'))
    .addColumn('work_queue', 'varchar(200)')
    .addColumn('priority', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('state_type', 'varchar(16)', (c) => c.notNull())
    .addColumn('state_name', 'varchar(64)', (c) => c.notNull())
    .addColumn('state_message', 'text')
    .addColumn('state_timestamp', 'varchar(32)', (c) => c.notNull())
    .addColumn('parameters', 'text', (c) => c.notNull())
    .addColumn('attempt', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_retries', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('retry_delays', 'text', (c) => c.notNull())
    .addColumn('expected_start_time', 'varchar(32)', (c) => c.notNull())
    .addColumn('next_scheduled_start_time', 'varchar(32)')
    .addColumn('start_time', 'varchar(32)')
    .addColumn('end_time', 'varchar(32)')
    .addColumn('worker_id', 'varchar(36)')
    .addColumn('claimed_at', 'varchar(32)')
    .addColumn('trigger_kind', 'varchar(16)', (c) => c.notNull())
    .addColumn('triggered_by', 'text', (c) => c.notNull())
    .addColumn('result', 'text')
    .addColumn('error', 'text')
    .addColumn('tags', 'text', (c) => c.notNull())
    .addColumn('idempotency_key', 'varchar(300)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  // One run per schedule slot (or per client idempotency key), whatever restarts or replicas do.
  await db.schema.createIndex('flow_runs_idempotency').on('flow_runs').columns(['deployment_id', 'idempotency_key']).unique().execute();
  await db.schema
    .createIndex('flow_runs_claimable')
    .on('flow_runs')
    .columns(['work_pool_id', 'state_type', 'priority', 'next_scheduled_start_time'])
    .execute();
  await db.schema.createIndex('flow_runs_worker').on('flow_runs').columns(['worker_id', 'state_type']).execute();
  await db.schema.createIndex('flow_runs_created').on('flow_runs').columns(['created_at']).execute();
  await db.schema.createIndex('flow_runs_deployment').on('flow_runs').columns(['deployment_id', 'state_type']).execute();

  await db.schema
    .createTable('flow_run_states')
    // An increasing id orders the history even when two states share a millisecond (Failed → AwaitingRetry).
    .addColumn('id', dialect.autoIncrementType, (c) => dialect.autoIncrementColumn(c.primaryKey()))
    .addColumn('flow_run_id', 'varchar(36)', (c) => c.notNull().references('flow_runs.id').onDelete('cascade'))
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('type', 'varchar(16)', (c) => c.notNull())
    .addColumn('name', 'varchar(64)', (c) => c.notNull())
    .addColumn('message', 'text')
    .addColumn('timestamp', 'varchar(32)', (c) => c.notNull())
    .addColumn('cause', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('flow_run_states_run').on('flow_run_states').columns(['flow_run_id', 'id']).execute();

  await db.schema
    .createTable('task_runs')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('flow_run_id', 'varchar(36)', (c) => c.notNull().references('flow_runs.id').onDelete('cascade'))
    .addColumn('task_key', 'varchar(200)', (c) => c.notNull())
    .addColumn('name', 'varchar(200)', (c) => c.notNull())
    .addColumn('state_type', 'varchar(16)', (c) => c.notNull())
    .addColumn('state_name', 'varchar(64)', (c) => c.notNull())
    .addColumn('state_message', 'text')
    .addColumn('state_timestamp', 'varchar(32)', (c) => c.notNull())
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('max_retries', 'integer', (c) => c.notNull())
    .addColumn('start_time', 'varchar(32)')
    .addColumn('end_time', 'varchar(32)')
    .addColumn('error', 'text')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('task_runs_flow_run').on('task_runs').columns(['flow_run_id', 'created_at']).execute();

  await db.schema
    .createTable('logs')
    .addColumn('id', dialect.autoIncrementType, (c) => dialect.autoIncrementColumn(c.primaryKey()))
    .addColumn('flow_run_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('task_run_id', 'varchar(36)')
    .addColumn('level', 'varchar(8)', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('timestamp', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('logs_flow_run').on('logs').columns(['flow_run_id', 'id']).execute();

  await db.schema
    .createTable('workers')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(200)', (c) => c.notNull())
    .addColumn('pool_id', 'varchar(36)', (c) => c.notNull().references('work_pools.id'))
    .addColumn('last_heartbeat_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('run_credentials')
    .addColumn('hash', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('flow_run_id', 'varchar(36)', (c) => c.notNull().references('flow_runs.id').onDelete('cascade'))
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('worker_id', 'varchar(36)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('revoked_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('run_credentials_run').on('run_credentials').columns(['flow_run_id']).execute();

  await db.schema
    .createTable('signing_keys')
    .addColumn('kid', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('alg', 'varchar(16)', (c) => c.notNull())
    .addColumn('public_jwk', 'text', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('activates_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('retired_at', 'varchar(32)')
    .addColumn('expires_at', 'varchar(32)')
    .execute();

  await db.schema
    .createTable('issued_tokens')
    .addColumn('jti', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('flow_run_id', 'varchar(36)', (c) => c.notNull().references('flow_runs.id').onDelete('cascade'))
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('task_run_id', 'varchar(36)')
    .addColumn('aud', 'text', (c) => c.notNull())
    .addColumn('sub', 'text', (c) => c.notNull())
    .addColumn('kid', 'varchar(64)', (c) => c.notNull())
    .addColumn('issued_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('expires_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('issued_tokens_run').on('issued_tokens').columns(['flow_run_id']).execute();
}
