import type { ClaimedRun, FlowRun } from '@tessera/core';
import { expect, test } from 'vitest';
import { buildRunEnv, outputPrefix } from './flow-process.js';

const claimed: ClaimedRun = {
  run: { id: '7f3c0000-aaaa-bbbb-cccc-000000000000', attempt: 2 } as FlowRun,
  credential: 'tsr_secret',
  entrypoint: 'flows.ts:main',
  path: '/srv/flows',
  env: { SHARED: 'deployment', TESSERA_RUN_CREDENTIAL: 'tsr_forged', TESSERA_API_URL: 'http://evil' },
};

test('the run environment layers process env < worker env < deployment env < run variables, which nothing overrides', () => {
  const env = buildRunEnv(
    claimed,
    'http://127.0.0.1:4200',
    { SHARED: 'worker', ONLY_WORKER: 'w' },
    { PATH: '/bin', SHARED: 'process', UNSET: undefined },
  );
  expect(env).toEqual({
    PATH: '/bin',
    SHARED: 'deployment',
    ONLY_WORKER: 'w',
    TESSERA_API_URL: 'http://127.0.0.1:4200',
    TESSERA_RUN_ID: claimed.run.id,
    TESSERA_RUN_ATTEMPT: '2',
    TESSERA_RUN_CREDENTIAL: 'tsr_secret',
    TESSERA_ENTRYPOINT: 'flows.ts:main',
  });
});

test("the worker's own TESSERA_* variables (its join token, token file, home, a server's secrets) never reach a run", () => {
  const env = buildRunEnv(
    claimed,
    'http://127.0.0.1:4200',
    { TESSERA_FLOW_SETTING: 'set on purpose' },
    {
      PATH: '/bin',
      TESSERA_JOIN_TOKEN: 'tsj_secret',
      TESSERA_FEDERATED_TOKEN_FILE: '/var/run/secrets/tessera/token',
      TESSERA_HOME: '/home/worker/.tessera',
      TESSERA_DATABASE_URL: 'postgres://tessera:pw@db/tessera',
      TESSERA_AUTH_CORP_CLIENT_SECRET: 'shh',
      TESSERA_LOG_LEVEL: 'debug',
    },
  );
  expect(
    Object.keys(env)
      .filter((k) => k.startsWith('TESSERA_'))
      .sort(),
  ).toEqual([
    'TESSERA_API_URL',
    'TESSERA_ENTRYPOINT',
    'TESSERA_FLOW_SETTING',
    'TESSERA_LOG_LEVEL',
    'TESSERA_RUN_ATTEMPT',
    'TESSERA_RUN_CREDENTIAL',
    'TESSERA_RUN_ID',
  ]);
  expect(env.PATH).toBe('/bin');
});

test('output lines are prefixed with the first characters of the run id', () => {
  expect(outputPrefix(claimed.run.id)).toBe('[run 7f3c] ');
});
