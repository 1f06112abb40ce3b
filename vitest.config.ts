import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // In-process tests import packages from source; subprocesses (CLI, flow runs) use the build.
    conditions: ['source'],
  },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    // In CI, also write a machine-readable report; .ci/run prints its totals as a plain closing line.
    ...(process.env.CI ? { reporters: ['default', 'json'], outputFile: { json: '.tessera/vitest-report.json' } } : {}),
  },
});
