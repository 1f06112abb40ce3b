import { defineConfig } from 'vitest/config';

/** Suites that exercise the store: they run once per store (SQLite and PostgreSQL). */
const STORE_SUITES = ['packages/server/src/**/*.test.ts', 'test/**/*.test.ts'];
// `npm start`'s script runs its own server on SQLite, and the bench's load client needs no store: once is enough.
const SQLITE_ONLY = ['test/start.e2e.test.ts', 'test/bench-load-client.test.ts'];

export default defineConfig({
  resolve: {
    // In-process tests import packages from source; subprocesses (CLI, flow runs) use the build.
    conditions: ['source'],
  },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    // In CI, also write a machine-readable report; .ci/run prints its totals as a plain closing line.
    ...(process.env.CI ? { reporters: ['default', 'json'], outputFile: { json: '.tessera/vitest-report.json' } } : {}),
    projects: [
      {
        extends: true,
        test: { name: 'sqlite', include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts'], env: { TESSERA_TEST_STORE: 'sqlite' } },
      },
      {
        extends: true,
        // PostgreSQL at TESSERA_TEST_DATABASE_URL (default 127.0.0.1:5432); each test server gets its own database.
        test: { name: 'postgres', include: STORE_SUITES, exclude: SQLITE_ONLY, env: { TESSERA_TEST_STORE: 'postgres' } },
      },
    ],
  },
});
