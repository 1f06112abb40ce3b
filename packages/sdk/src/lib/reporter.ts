import { type ApiClient, type LogEntry, redactSecrets, type TaskRunEvent } from '@tessera/core';
import { Batcher } from './batcher.js';
import { describeThrown } from './run-error.js';

/** Tuning for {@link RunReporter}; the defaults suit production. */
export interface RunReporterOptions {
  /** @default 50 */
  intervalMs?: number;
  /** @default 500 */
  maxItems?: number;
}

/** Fastify's default body limit is 1 MiB; stay well under it. */
const MAX_LOG_BATCH_BYTES = 512 * 1024;

/**
 * Sends a flow run's task-run events and log lines to the server in batches, through the run's
 * {@link ApiClient}. A failed batch is reported once on stderr and dropped: losing telemetry must
 * not fail the user's run.
 */
export class RunReporter {
  readonly events: Batcher<TaskRunEvent>;
  readonly logs: Batcher<LogEntry>;
  private warned = new Set<string>();

  constructor(client: ApiClient, options: RunReporterOptions = {}) {
    const common = { intervalMs: options.intervalMs ?? 50, maxItems: options.maxItems ?? 500 };
    this.events = new Batcher<TaskRunEvent>({
      ...common,
      send: (events) => client.sendTaskRunEvents(events),
      onError: (e, n) => this.warn('task-run events', e, n),
    });
    this.logs = new Batcher<LogEntry>({
      ...common,
      send: (entries) => client.sendLogs(entries),
      maxBytes: MAX_LOG_BATCH_BYTES,
      weigh: (entry) => entry.message.length + 128,
      onError: (e, n) => this.warn('log lines', e, n),
    });
  }

  /** Sends everything queued so far. Never rejects. */
  async flush(): Promise<void> {
    await Promise.all([this.events.flush(), this.logs.flush()]);
  }

  /** Stops accepting events and logs. */
  close(): void {
    this.events.close();
    this.logs.close();
  }

  private warn(what: string, error: unknown, dropped: number): void {
    const code = (error as { code?: unknown })?.code;
    const key = `${what}:${String(code)}`;
    if (this.warned.has(key)) return;
    this.warned.add(key);
    process.stderr.write(
      `tessera: could not send ${dropped} ${what} to the server (${typeof code === 'string' ? `${code}: ` : ''}${redactSecrets(describeThrown(error))}); the run continues without them\n`,
    );
  }
}
