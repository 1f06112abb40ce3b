import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { type ApiClient, createApiClient } from '@tessera/core';
import { type OrchestrationSettings, type RunningServer, type ServerOptions, startServer } from '@tessera/server';
import { createTestDatabase, type TestDatabase, testStore } from './database.js';

export interface TestServer extends RunningServer {
  client: ApiClient;
  home: string;
  /** The database URL (pass it to a restarted server to keep the data). */
  databaseUrl: string | undefined;
  /** Every line the server logged (scan them for secrets). */
  logs: string[];
  /** Stops the server but keeps its data directory (restart tests). */
  stop(): Promise<void>;
  /** Stops the server and deletes its data. */
  close(): Promise<void>;
}

/** Fast timings for tests. */
export const TEST_SETTINGS: Partial<OrchestrationSettings> = {
  heartbeatTimeoutMs: 4_000,
  loopIntervalMs: 300,
  lateAfterMs: 5_000,
  lostClaimAfterMs: 5_000,
};

/**
 * Starts a real server on 127.0.0.1 (ephemeral port) over a fresh database: a SQLite file in a temp
 * dir, or — with `TESSERA_TEST_STORE=postgres` — a PostgreSQL database with a unique name, dropped
 * on `close()`. Pass `databaseUrl` (and `home`) of a stopped server to restart it on the same data.
 */
export async function startTestServer(options: Partial<ServerOptions> & { home?: string } = {}): Promise<TestServer> {
  const home = options.home ?? mkdtempSync(join(tmpdir(), 'tessera-test-'));
  mkdirSync(home, { recursive: true });
  let database: TestDatabase | undefined;
  if (!options.databaseUrl && testStore() === 'postgres') database = await createTestDatabase();
  const databaseUrl = options.databaseUrl ?? database?.url;
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  let server: RunningServer;
  try {
    server = await startServer({
      port: 0,
      logLevel: 'info',
      logStream,
      ...options,
      ...(databaseUrl ? { databaseUrl } : {}),
      home,
      settings: { ...TEST_SETTINGS, ...options.settings },
    });
  } catch (e) {
    await database?.drop();
    if (!options.home) rmSync(home, { recursive: true, force: true });
    throw e;
  }
  const client = createApiClient({ baseUrl: server.url });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.close();
  };
  return {
    ...server,
    client,
    home,
    databaseUrl,
    logs,
    stop,
    async close() {
      await stop();
      if (!options.home) rmSync(home, { recursive: true, force: true });
      await database?.drop();
    },
  };
}
