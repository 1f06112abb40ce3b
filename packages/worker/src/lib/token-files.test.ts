import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type IdentityTokenRequest, type IdentityTokenResponse, TesseraError } from '@tessera/core';
import { afterEach, describe, expect, test } from 'vitest';
import { collectingLogger, tempDir, waitFor } from '../../test/helpers.js';
import { buildRunEnv } from './flow-process.js';
import { DEFAULT_GCP_TOKEN_URL, type ProjectedTokenFiles, planTokenFiles, projectTokenFiles, sweepTokenDirs } from './token-files.js';

const RUN_ID = '7f3c1a2b-0000-4000-8000-000000000001';

/** An unsigned JWT-shaped token: the worker only reads `exp - iat` from it. */
function fakeToken(aud: string, lifetimeS: number): { token: string; jti: string } {
  const jti = randomUUID();
  const iat = Math.floor(Date.now() / 1000);
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return { token: `${part({ alg: 'none', typ: 'JWT' })}.${part({ aud, iat, exp: iat + lifetimeS, jti })}.c2lnbmF0dXJlLXBhcnQ`, jti };
}

function jtiOf(token: string): string {
  return JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).jti;
}

/** A stand-in for `ApiClient.issueIdentityToken`, recording requests; `fail` decides which fail. */
function issuer(lifetimeS = 60) {
  const requests: IdentityTokenRequest[] = [];
  /** When each request arrived (ms since the epoch). */
  const askedAt: number[] = [];
  const issued: string[] = [];
  let fail: ((req: IdentityTokenRequest) => Error | undefined) | undefined;
  let delayMs = 0;
  const issue = async (req: IdentityTokenRequest): Promise<IdentityTokenResponse> => {
    requests.push(req);
    askedAt.push(Date.now());
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    const error = fail?.(req);
    if (error) throw error;
    const { token, jti } = fakeToken(req.audience, lifetimeS);
    issued.push(token);
    return {
      token,
      tokenType: 'JWT',
      jti,
      expiresAt: new Date(Date.now() + lifetimeS * 1000).toISOString(),
      kid: 'k1',
      alg: 'RS256',
      sub: 'ws:default:deployment:d:env:dev',
      aud: req.audience,
    };
  };
  return {
    issue,
    requests,
    askedAt,
    issued,
    setFail(f: typeof fail) {
      fail = f;
    },
    /** Every answer takes this long (a slow server). */
    setDelay(ms: number) {
      delayMs = ms;
    },
  };
}

const open: ProjectedTokenFiles[] = [];
afterEach(async () => {
  for (const p of open.splice(0)) await p.close();
});

async function project(spec: unknown, iss = issuer(), extra: { retryForMs?: number; signal?: AbortSignal } = {}) {
  const logger = collectingLogger();
  const baseDir = tempDir('tessera-tokens-');
  const projected = await projectTokenFiles({
    spec,
    runId: RUN_ID,
    baseDir,
    issue: iss.issue,
    logger,
    label: 'run 7f3c1a2b',
    retryForMs: extra.retryForMs ?? 0,
    ...(extra.signal ? { signal: extra.signal } : {}),
  });
  open.push(projected);
  return { projected, logger, baseDir, iss };
}

const mode = (path: string) => statSync(path).mode & 0o777;

describe('planning token files', () => {
  test('sets the standard AWS, Google and Azure variables with default audiences', () => {
    const plan = planTokenFiles(
      {
        aws: { roleArn: 'arn:aws:iam::123456789012:role/etl' },
        gcp: { audience: '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/tessera' },
        azure: { clientId: 'c1', tenantId: 't1' },
      },
      '/d',
      RUN_ID,
    );
    expect(plan.env).toEqual({
      AWS_WEB_IDENTITY_TOKEN_FILE: '/d/aws-web-identity-token',
      AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/etl',
      AWS_ROLE_SESSION_NAME: RUN_ID,
      GOOGLE_APPLICATION_CREDENTIALS: '/d/gcp-credentials.json',
      CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE: '/d/gcp-credentials.json',
      AZURE_FEDERATED_TOKEN_FILE: '/d/azure-federated-token',
      AZURE_CLIENT_ID: 'c1',
      AZURE_TENANT_ID: 't1',
    });
    expect(plan.files.map((f) => [f.cloud, f.audience])).toEqual([
      ['aws', 'sts.amazonaws.com'],
      ['gcp', '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/tessera'],
      ['azure', 'api://AzureADTokenExchange'],
    ]);
    expect(plan.env).not.toHaveProperty('AZURE_AUTHORITY_HOST');
    expect(plan.shadowed).toContain('AWS_SECRET_ACCESS_KEY');
    expect(plan.shadowed).toContain('AZURE_CLIENT_SECRET');
  });

  test('writes a Google external_account configuration pointing at the token file', () => {
    const plan = planTokenFiles(
      {
        gcp: {
          audience: '//iam.googleapis.com/x',
          tokenUrl: 'https://sts.example.com/v1/token',
          serviceAccountImpersonationUrl:
            'https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b.iam.gserviceaccount.com:generateAccessToken',
        },
      },
      '/d',
      RUN_ID,
    );
    expect(JSON.parse(plan.staticFiles[0]?.content ?? '')).toEqual({
      type: 'external_account',
      audience: '//iam.googleapis.com/x',
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      token_url: 'https://sts.example.com/v1/token',
      credential_source: { file: '/d/gcp-subject-token', format: { type: 'text' } },
      service_account_impersonation_url:
        'https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b.iam.gserviceaccount.com:generateAccessToken',
    });
    const plain = JSON.parse(planTokenFiles({ gcp: { audience: 'a' } }, '/d', RUN_ID).staticFiles[0]?.content ?? '');
    expect(plain.token_url).toBe(DEFAULT_GCP_TOKEN_URL);
    expect(plain).not.toHaveProperty('service_account_impersonation_url');
  });

  test('refuses a malformed spec from the network, naming the field', () => {
    expect(() => planTokenFiles({ aws: { audience: 'x' } }, '/d', RUN_ID)).toThrow(
      expect.objectContaining({ code: 'ERR_VALIDATION', message: expect.stringContaining('identity.tokenFiles.aws.roleArn') }),
    );
    expect(() => planTokenFiles({ azure: { clientId: 'c', tenantId: 't', lifetimeMs: -1 } }, '/d', RUN_ID)).toThrow(
      /identity\.tokenFiles\.azure\.lifetimeMs/,
    );
    expect(() => planTokenFiles('aws', '/d', RUN_ID)).toThrow(/identity\.tokenFiles: expected a mapping/);
  });

  test("token variables win over the deployment's env; static credentials inherited from the worker are dropped", () => {
    const claimed = {
      run: { id: RUN_ID, attempt: 1 } as never,
      credential: 'tsr_x',
      entrypoint: 'f.ts:f',
      path: '/p',
      env: { AWS_ROLE_ARN: 'from-deployment', AWS_REGION: 'eu-west-1', TESSERA_RUN_ID: 'forged' },
    };
    const plan = planTokenFiles({ aws: { roleArn: 'arn:aws:iam::123456789012:role/etl' } }, '/d', RUN_ID);
    const env = buildRunEnv(
      claimed,
      'http://127.0.0.1:1',
      { AWS_SESSION_TOKEN: 'worker-option' },
      { AWS_ACCESS_KEY_ID: 'AKIAWORKER', AWS_SECRET_ACCESS_KEY: 's', AWS_PROFILE: 'p', PATH: '/bin' },
      plan,
    );
    expect(env).toMatchObject({ AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/etl', AWS_REGION: 'eu-west-1', PATH: '/bin' });
    expect(env.TESSERA_RUN_ID).toBe(RUN_ID);
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE']) expect(env).not.toHaveProperty(k);
    // Without token files nothing is dropped.
    expect(buildRunEnv(claimed, 'http://127.0.0.1:1', {}, { AWS_ACCESS_KEY_ID: 'AKIAWORKER' }).AWS_ACCESS_KEY_ID).toBe('AKIAWORKER');
  });
});

describe('projecting token files', () => {
  test('writes each token 0600 in a 0700 per-run directory and removes it on close', async () => {
    const { projected, baseDir, iss } = await project({
      aws: { roleArn: 'arn:aws:iam::123456789012:role/etl', lifetimeMs: 900_000 },
      azure: { clientId: 'c', tenantId: 't' },
    });
    expect(mode(projected.dir)).toBe(0o700);
    const aws = projected.env.AWS_WEB_IDENTITY_TOKEN_FILE as string;
    const azure = projected.env.AZURE_FEDERATED_TOKEN_FILE as string;
    expect(mode(aws)).toBe(0o600);
    expect(mode(azure)).toBe(0o600);
    expect(iss.issued).toContain(readFileSync(aws, 'utf8'));
    expect(iss.requests).toEqual(
      expect.arrayContaining([{ audience: 'sts.amazonaws.com', lifetime: 900_000 }, { audience: 'api://AzureADTokenExchange' }]),
    );
    expect(readdirSync(projected.dir).sort()).toEqual(['aws-web-identity-token', 'azure-federated-token']);
    await projected.close();
    expect(existsSync(projected.dir)).toBe(false);
    expect(readdirSync(baseDir)).toEqual([]);
  });

  test('replaces a token at 75% of its lifetime, atomically: a reader never sees a partial file', async () => {
    const iss = issuer(1);
    const { projected } = await project({ azure: { clientId: 'c', tenantId: 't' } }, iss);
    const path = projected.env.AZURE_FEDERATED_TOKEN_FILE as string;
    const firstAt = Date.now();
    const first = jtiOf(readFileSync(path, 'utf8'));
    const seen = new Set<string>();
    // Read as fast as possible across two refreshes; every read must be one whole issued token.
    while (seen.size < 3 && Date.now() - firstAt < 5_000) {
      const text = readFileSync(path, 'utf8');
      expect(iss.issued).toContain(text);
      seen.add(jtiOf(text));
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(seen.size).toBe(3);
    expect(seen.has(first)).toBe(true);
    // Two refreshes of a 1 s token: at about 0.75 s and 1.5 s.
    expect(Date.now() - firstAt).toBeGreaterThanOrEqual(1_300);
    expect(mode(path)).toBe(0o600);
    expect(readdirSync(projected.dir)).toEqual(['azure-federated-token']);
  });

  test('has the new token in the file before 80% of the old one’s lifetime, even when the server answers slowly', async () => {
    const iss = issuer(4);
    // Every answer takes 600 ms. The first token is minted 0.6 s after the ask, so 80% of its 4 s is
    // reached 0.6 + 3.2 = 3.8 s after the ask. Asking again at 75% from the ask (3.0 s) puts the new token
    // in the file at about 3.6 s; timing the refresh from the write instead (0.6 + 3.2 s) would put it
    // there at 4.4 s, too late.
    iss.setDelay(600);
    const { projected } = await project({ azure: { clientId: 'c', tenantId: 't' } }, iss);
    const path = projected.env.AZURE_FEDERATED_TOKEN_FILE as string;
    const first = readFileSync(path, 'utf8');
    await waitFor('the refresh', () => readFileSync(path, 'utf8') !== first, 8_000);
    const replacedAfterMs = Date.now() - (iss.askedAt[0] as number);
    expect(iss.askedAt[1] as number).toBeGreaterThanOrEqual((iss.askedAt[0] as number) + 2_900);
    expect(replacedAfterMs).toBeLessThan(4_200);
  });

  test('keeps the current token when a refresh fails, logs without the token, and recovers', async () => {
    const iss = issuer(1);
    const { projected, logger } = await project({ aws: { roleArn: 'arn:aws:iam::123456789012:role/etl' } }, iss);
    const path = projected.env.AWS_WEB_IDENTITY_TOKEN_FILE as string;
    const before = readFileSync(path, 'utf8');
    iss.setFail(() => new TesseraError('ERR_SERVER_UNREACHABLE', 'cannot reach the Tessera server'));
    await waitFor('a failed refresh', () =>
      logger.lines.find((l) => l.startsWith('warn') && l.includes('cannot refresh the AWS token file')),
    );
    expect(readFileSync(path, 'utf8')).toBe(before);
    const failures = iss.requests.length;
    iss.setFail(undefined);
    await waitFor('recovery', () => readFileSync(path, 'utf8') !== before, 5_000);
    expect(iss.requests.length).toBeGreaterThan(failures);
    await waitFor('the recovery line', () => logger.lines.find((l) => l.includes('refreshed again')));
    const everything = logger.lines.join('\n');
    for (const token of iss.issued) expect(everything).not.toContain(token);
    expect(everything).toContain(`jti ${jtiOf(before)}`);
  });

  test('reports an expired token once and keeps retrying', async () => {
    const iss = issuer(1);
    const { logger } = await project({ azure: { clientId: 'c', tenantId: 't' } }, iss);
    iss.setFail(() => new TesseraError('ERR_INTERNAL', 'boom', { status: 500 }));
    await waitFor('the expiry error', () => logger.lines.find((l) => l.startsWith('error') && l.includes('holds an expired token')), 5_000);
    const count = iss.requests.length;
    await waitFor('another retry', () => iss.requests.length > count, 5_000);
    expect(logger.lines.filter((l) => l.includes('holds an expired token'))).toHaveLength(1);
  });

  test('stops refreshing once the run has ended (its credential is revoked)', async () => {
    const iss = issuer(1);
    const { logger } = await project({ azure: { clientId: 'c', tenantId: 't' } }, iss);
    iss.setFail(() => new TesseraError('ERR_CREDENTIAL_REVOKED', 'the run credential is no longer valid'));
    await waitFor('the end', () => logger.lines.find((l) => l.includes('no longer refreshed: the run has ended')), 5_000);
    const count = iss.requests.length;
    await new Promise((r) => setTimeout(r, 1_200));
    expect(iss.requests.length).toBe(count);
  });

  test('fails with the server reason, the cloud and the field when a first token is refused, leaving no directory', async () => {
    const iss = issuer();
    iss.setFail((req) =>
      req.audience === 'api://AzureADTokenExchange'
        ? new TesseraError('ERR_AUDIENCE_NOT_ALLOWED', 'audience "api://AzureADTokenExchange" is not allowed for deployment "d"')
        : undefined,
    );
    const baseDir = tempDir('tessera-tokens-');
    const attempt = projectTokenFiles({
      spec: { aws: { roleArn: 'arn:aws:iam::123456789012:role/etl' }, azure: { clientId: 'c', tenantId: 't' } },
      runId: RUN_ID,
      baseDir,
      issue: iss.issue,
      logger: collectingLogger(),
      label: 'run 7f3c1a2b',
      retryForMs: 10_000,
    });
    await expect(attempt).rejects.toMatchObject({
      code: 'ERR_AUDIENCE_NOT_ALLOWED',
      message: expect.stringMatching(
        /cannot get the Azure token file's first token \(identity\.tokenFiles\.azure, audience "api:\/\/AzureADTokenExchange"\): audience .* is not allowed for deployment "d"/,
      ),
    });
    // Refused: not retried.
    expect(iss.requests.filter((r) => r.audience === 'api://AzureADTokenExchange')).toHaveLength(1);
    expect(readdirSync(baseDir)).toEqual([]);
  });

  test('retries the first token while the server is unreachable', async () => {
    const iss = issuer();
    let failures = 2;
    iss.setFail(() => (failures-- > 0 ? new TesseraError('ERR_SERVER_UNREACHABLE', 'down') : undefined));
    const { projected } = await project({ azure: { clientId: 'c', tenantId: 't' } }, iss, { retryForMs: 10_000 });
    expect(existsSync(join(projected.dir, 'azure-federated-token'))).toBe(true);
    expect(iss.requests).toHaveLength(3);
  });

  test('gives up the first fetch when the run is cancelled before it starts', async () => {
    const abort = new AbortController();
    const baseDir = tempDir('tessera-tokens-');
    const attempt = projectTokenFiles({
      spec: { azure: { clientId: 'c', tenantId: 't' } },
      runId: RUN_ID,
      baseDir,
      issue: () => new Promise<never>(() => {}),
      logger: collectingLogger(),
      label: 'run 7f3c1a2b',
      retryForMs: 60_000,
      signal: abort.signal,
    });
    setTimeout(() => abort.abort(), 50);
    await expect(attempt).rejects.toMatchObject({ code: 'ERR_CANCELLED' });
    expect(readdirSync(baseDir)).toEqual([]);
  });
});

describe('sweeping token directories left by a killed worker', () => {
  /** The pid of a process that has already exited. */
  const deadPid = () => {
    const r = spawnSync(process.execPath, ['-e', '']);
    return r.pid as number;
  };

  test('removes the directories of a worker process that is gone, and only those', async () => {
    const base = tempDir('tessera-sweep-');
    const logger = collectingLogger();
    const dead = deadPid();
    const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
    try {
      const mk = (name: string) => {
        mkdirSync(join(base, name), { mode: 0o700 });
        writeFileSync(join(base, name, 'aws-web-identity-token'), 'token', { mode: 0o600 });
        return name;
      };
      const orphan = mk(`tessera-run-7f3c1a2b-${dead}-Ab12Cd`);
      const mine = mk(`tessera-run-7f3c1a2b-${process.pid}-Ef34Gh`);
      const other = mk(`tessera-run-7f3c1a2b-${live.pid}-Ij56Kl`);
      const unrelated = mk('tessera-run-older-format-Mn78Op');
      // A link named like an orphan must not lead the sweep elsewhere.
      const target = mk('somewhere-else');
      symlinkSync(join(base, target), join(base, `tessera-run-0badf00d-${dead}-Qr90St`));

      expect(await sweepTokenDirs(base, logger)).toBe(1);
      expect(readdirSync(base).sort()).toEqual([mine, other, target, unrelated, `tessera-run-0badf00d-${dead}-Qr90St`].sort());
      expect(readdirSync(join(base, target))).toEqual(['aws-web-identity-token']);
      expect(logger.lines.join('\n')).toContain(`removed the token files of run 7f3c1a2b, left behind by worker process ${dead}`);
      expect(existsSync(join(base, orphan))).toBe(false);
      // Nothing there, or no directory at all: nothing to do, no error.
      expect(await sweepTokenDirs(join(base, 'missing'), logger)).toBe(0);
    } finally {
      live.kill('SIGKILL');
    }
  });

  test("a run's directory carries its worker's pid, which the sweep reads", async () => {
    const base = tempDir('tessera-sweep-');
    const { issue } = issuer();
    const files = await projectTokenFiles({
      spec: { aws: { roleArn: 'arn:aws:iam::123456789012:role/r' } },
      runId: RUN_ID,
      baseDir: base,
      issue,
      logger: collectingLogger(),
      label: 'run 7f3c1a2b',
      retryForMs: 1_000,
    });
    try {
      expect(files.dir).toMatch(new RegExp(`/tessera-run-7f3c1a2b-${process.pid}-[0-9A-Za-z]{6}$`));
      // This worker is alive: its directory stays.
      expect(await sweepTokenDirs(base, collectingLogger())).toBe(0);
      expect(existsSync(files.dir)).toBe(true);
    } finally {
      await files.close();
    }
  });
});

describe('a worker process killed with SIGKILL', () => {
  test('leaves its run directory behind, and the next sweep removes it', async () => {
    const base = tempDir('tessera-sweep-');
    // A real process projects a run's token files (as the worker does), then is killed before it can clean up.
    const script = `
      const { projectTokenFiles } = await import(${JSON.stringify(new URL('../../dist/lib/token-files.js', import.meta.url).href)});
      const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const iat = Math.floor(Date.now() / 1000);
      const token = part({ alg: 'none' }) + '.' + part({ aud: 'sts.amazonaws.com', iat, exp: iat + 600, jti: 'j1' }) + '.c2ln';
      const files = await projectTokenFiles({
        spec: { aws: { roleArn: 'arn:aws:iam::123456789012:role/r' } },
        runId: ${JSON.stringify(RUN_ID)},
        baseDir: ${JSON.stringify(base)},
        issue: async (req) => ({ token, tokenType: 'JWT', jti: 'j1', expiresAt: new Date((iat + 600) * 1000).toISOString(), kid: 'k1', audience: req.audience }),
        logger: { info() {}, warn() {}, error() {} },
        label: 'run 7f3c1a2b',
        retryForMs: 1000,
      });
      process.stdout.write(files.dir + '\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const runDir = await new Promise<string>((resolve, reject) => {
      child.stdout?.once('data', (d: Buffer) => resolve(d.toString().trim()));
      child.once('exit', (code) => reject(new Error(`the child exited (${code}) before projecting`)));
    });
    expect(readdirSync(runDir)).toEqual(['aws-web-identity-token']);
    const logger = collectingLogger();
    // Alive: not touched.
    expect(await sweepTokenDirs(base, logger)).toBe(0);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(runDir)).toBe(true);
    expect(await sweepTokenDirs(base, logger)).toBe(1);
    expect(existsSync(runDir)).toBe(false);
  });
});
