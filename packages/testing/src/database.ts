import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** Which store the test servers use: `TESSERA_TEST_STORE=postgres` selects PostgreSQL. */
export type TestStore = 'sqlite' | 'postgres';

export function testStore(): TestStore {
  return process.env.TESSERA_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';
}

/** The PostgreSQL server tests use. @default postgres://postgres@127.0.0.1:5432/postgres */
export function testDatabaseUrl(): string {
  return process.env.TESSERA_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
}

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/**
 * Creates a database with a unique name on the test PostgreSQL server; `drop()` removes it.
 * Its sessions commit without waiting for the WAL flush (`synchronous_commit = off`): dozens of
 * test databases share one disk, and a commit that waits behind another test's `fsync` would turn
 * into a missed heartbeat. What is lost that way is only what a crash of PostgreSQL itself would
 * lose, which no test does; the commits are as atomic and as visible as ever.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const admin = testDatabaseUrl();
  const name = `tessera_test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
    await client.query(`alter database ${name} set synchronous_commit = off`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        await c.query(`drop database if exists ${name} with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** True when the test PostgreSQL server answers. */
export async function postgresAvailable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: testDatabaseUrl(), connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}
