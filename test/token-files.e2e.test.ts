/**
 * Token files end to end: a real server, a real worker (the CLI) and real flow processes, in which
 * the real AWS and Google client libraries read what the worker projected and exchange the token
 * at local stand-ins of AWS STS and Google STS. The stand-ins verify each token against the
 * server's JWKS, as the clouds do; only the cloud side is faked.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { type DeploymentSpec, type FlowRun, isTerminal } from '@tessera/core';
import {
  type BackgroundProcess,
  createTestProject,
  runCli,
  startCli,
  startTestServer,
  type TestProject,
  type TestServer,
  waitFor,
} from '@tessera/testing';
import { createRemoteJWKSet, decodeJwt, type JWTPayload, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROLE_ARN = 'arn:aws:iam::123456789012:role/etl';
const GCP_AUDIENCE = '//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/tessera/providers/tessera';
const SERVICE_ACCOUNT = 'etl@tessera-test.iam.gserviceaccount.com';

/** Flow code: drives the real SDKs with nothing but the environment the worker set. */
const FLOWS = `
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { flow, identity } from '@tessera/sdk';
import { z } from 'zod';

const VARS = [
  'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN', 'AWS_ROLE_SESSION_NAME', 'AWS_ACCESS_KEY_ID',
  'GOOGLE_APPLICATION_CREDENTIALS', 'CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE',
  'AZURE_FEDERATED_TOKEN_FILE', 'AZURE_CLIENT_ID', 'AZURE_TENANT_ID', 'AZURE_AUTHORITY_HOST',
];
const mode = (path: string) => statSync(path).mode & 0o777;
function seen() {
  const env: Record<string, string> = {};
  for (const k of VARS) if (process.env[k] !== undefined) env[k] = process.env[k] as string;
  const file = env.AWS_WEB_IDENTITY_TOKEN_FILE ?? env.GOOGLE_APPLICATION_CREDENTIALS ?? env.AZURE_FEDERATED_TOKEN_FILE;
  return { env, fileMode: file ? mode(file) : null, dirMode: file ? mode(dirname(file)) : null };
}
const params = z.object({ out: z.string(), sts: z.string().default(''), ms: z.number().default(0) });

export const awsClient = flow({ name: 'aws-client', parameters: params }, async ({ out, sts }) => {
  const { fromTokenFile } = await import('@aws-sdk/credential-providers');
  const credentials = await fromTokenFile({ clientConfig: { endpoint: sts, region: 'us-east-1', maxAttempts: 1 } })();
  // The flow keeps its own identity.token() next to the files.
  const own = await identity.token({ audience: 'sts.amazonaws.com' });
  writeFileSync(out, JSON.stringify({ ...seen(), ownToken: own.split('.').length === 3, credentials }));
});

export const gcpClient = flow({ name: 'gcp-client', parameters: params }, async ({ out }) => {
  const { GoogleAuth } = await import('google-auth-library');
  const auth = new GoogleAuth({ scopes: ['https://www.googleapis.com/auth/cloud-platform'] });
  const accessToken = await auth.getAccessToken();
  const config = JSON.parse(readFileSync(process.env.GOOGLE_APPLICATION_CREDENTIALS as string, 'utf8'));
  writeFileSync(out, JSON.stringify({ ...seen(), accessToken, config }));
});

export const holdTokens = flow({ name: 'hold-tokens', parameters: params }, async ({ out, ms }) => {
  writeFileSync(out, JSON.stringify(seen()));
  await new Promise((r) => setTimeout(r, ms));
});
`;

interface Seen {
  env: Record<string, string>;
  fileMode: number | null;
  dirMode: number | null;
}

/** What the stand-in clouds received, after verification. */
interface Exchange {
  cloud: 'aws' | 'gcp' | 'gcp-impersonation';
  claims?: JWTPayload;
  params: Record<string, string>;
}

let server: TestServer;
let project: TestProject;
let worker: BackgroundProcess;
let clouds: Server;
let cloudsUrl: string;
/** TMPDIR of the worker: every run's token directory is created in it. */
let tokenBase: string;
const exchanges: Exchange[] = [];

const sub = (deployment: string) => `ws:default:deployment:${deployment}:env:dev`;

/**
 * Local AWS STS (`AssumeRoleWithWebIdentity`, query protocol, XML answer) and Google STS
 * (RFC 8693 token exchange) plus IAM Credentials `generateAccessToken`, each checking the token as
 * the cloud would: signature against the issuer's JWKS, issuer, audience and `sub`.
 */
async function startClouds(): Promise<void> {
  const jwks = createRemoteJWKSet(new URL(`${server.issuer}/.well-known/jwks.json`));
  const stsAccessTokens = new Set<string>();
  const read = async (req: IncomingMessage) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  };
  const awsError = (res: ServerResponse, code: string, message: string) =>
    res
      .writeHead(400, { 'content-type': 'text/xml' })
      .end(
        `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>${code}</Code><Message>${message}</Message></Error><RequestId>${randomUUID()}</RequestId></ErrorResponse>`,
      );
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await read(req);
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const params = Object.fromEntries(new URLSearchParams(body));
    if (params.Action === 'AssumeRoleWithWebIdentity') {
      let claims: JWTPayload;
      try {
        ({ payload: claims } = await jwtVerify(params.WebIdentityToken ?? '', jwks, {
          issuer: server.issuer,
          audience: 'sts.amazonaws.com',
        }));
      } catch (e) {
        return awsError(res, 'InvalidIdentityToken', (e as Error).message);
      }
      if (claims.sub !== sub('aws-interop') || params.RoleArn !== ROLE_ARN) {
        return awsError(res, 'AccessDenied', 'Not authorized to perform sts:AssumeRoleWithWebIdentity');
      }
      exchanges.push({ cloud: 'aws', claims, params });
      const expiration = new Date(Date.now() + 3_600_000).toISOString();
      return res
        .writeHead(200, { 'content-type': 'text/xml' })
        .end(`<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>${claims.sub}</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/etl/${params.RoleSessionName}</Arn>
      <AssumedRoleId>AROATESSERATEST:${params.RoleSessionName}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIATESSERATEST</AccessKeyId>
      <SecretAccessKey>test-secret-access-key</SecretAccessKey>
      <SessionToken>test-session-token</SessionToken>
      <Expiration>${expiration}</Expiration>
    </Credentials>
    <Provider>${server.issuer}</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`);
    }
    if (url.pathname === '/gcp/v1/token') {
      const refuse = (description: string) =>
        res
          .writeHead(400, { 'content-type': 'application/json' })
          .end(JSON.stringify({ error: 'invalid_grant', error_description: description }));
      if (params.grant_type !== 'urn:ietf:params:oauth:grant-type:token-exchange') return refuse(`grant_type ${params.grant_type}`);
      if (params.subject_token_type !== 'urn:ietf:params:oauth:token-type:jwt')
        return refuse(`subject_token_type ${params.subject_token_type}`);
      if (params.audience !== GCP_AUDIENCE) return refuse(`audience ${params.audience}`);
      let claims: JWTPayload;
      try {
        ({ payload: claims } = await jwtVerify(params.subject_token ?? '', jwks, { issuer: server.issuer, audience: GCP_AUDIENCE }));
      } catch (e) {
        return refuse((e as Error).message);
      }
      if (claims.sub !== sub('gcp-interop')) return refuse(`sub ${claims.sub}`);
      exchanges.push({ cloud: 'gcp', claims, params });
      const accessToken = `sts-${randomUUID()}`;
      stsAccessTokens.add(accessToken);
      return res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          access_token: accessToken,
          issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          token_type: 'Bearer',
          expires_in: 3600,
        }),
      );
    }
    if (url.pathname === `/gcp/v1/projects/-/serviceAccounts/${SERVICE_ACCOUNT}:generateAccessToken`) {
      const bearer = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (!stsAccessTokens.has(bearer)) return res.writeHead(401).end('{"error":{"code":401}}');
      exchanges.push({ cloud: 'gcp-impersonation', params: JSON.parse(body) });
      return res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ accessToken: 'ya29.impersonated-for-tessera', expireTime: new Date(Date.now() + 3_600_000).toISOString() }));
    }
    res.writeHead(404).end();
  };
  clouds = createServer((req, res) => {
    handle(req, res).catch((e) => res.writeHead(500).end(String(e)));
  });
  await new Promise<void>((resolve) => clouds.listen(0, '127.0.0.1', resolve));
  cloudsUrl = `http://127.0.0.1:${(clouds.address() as AddressInfo).port}`;
}

function deploy(name: string, entry: string, identity: DeploymentSpec['identity'], env: Record<string, string> = {}) {
  return server.client.putDeployment({
    name,
    flowName: name,
    entrypoint: `flows.ts:${entry}`,
    path: project.dir,
    workPool: 'default',
    identity,
    env,
  });
}

async function finished(id: string, timeoutMs = 30_000): Promise<FlowRun> {
  return waitFor(
    async () => {
      const r = await server.client.getFlowRun(id);
      return isTerminal(r.state.type) ? r : undefined;
    },
    { timeoutMs, what: `run ${id} to finish` },
  );
}

const runDirs = () => readdirSync(tokenBase).filter((d) => d.startsWith('tessera-run-'));

beforeAll(async () => {
  project = createTestProject({ 'flows.ts': FLOWS });
  tokenBase = mkdtempSync(join(tmpdir(), 'tessera-token-base-'));
  // Short token lifetimes, to watch a refresh happen.
  server = await startTestServer({ settings: { minTokenLifetimeMs: 1_000 } });
  await server.client.createWorkPool({ name: 'default' });
  await startClouds();
  worker = startCli(['worker', 'start', '--pool', 'default', '--poll-wait', '2s', '--cancel-grace', '3s'], {
    // Static credentials on the worker's machine must not reach a run that has AWS token files.
    env: { TESSERA_API_URL: server.url, TMPDIR: tokenBase, AWS_ACCESS_KEY_ID: 'AKIAWORKERSOWN' },
  });
});

afterAll(async () => {
  await worker?.kill('SIGTERM');
  await new Promise<void>((resolve) => (clouds ? clouds.close(() => resolve()) : resolve()));
  await server?.close();
  project?.remove();
  rmSync(tokenBase, { recursive: true, force: true });
});

describe('token files with the real cloud SDKs', () => {
  it('the AWS SDK (fromTokenFile) reads the projected file and gets credentials from STS for the run', async () => {
    await deploy('aws-interop', 'awsClient', { audiences: ['sts.amazonaws.com'], tokenFiles: { aws: { roleArn: ROLE_ARN } } });
    const out = join(project.dir, 'aws.json');
    const run = await server.client.runDeployment('aws-interop', { parameters: { out, sts: `${cloudsUrl}/aws` } });
    const done = await finished(run.id);
    expect(done.state.type, done.state.message ?? '').toBe('COMPLETED');
    const result = JSON.parse(readFileSync(out, 'utf8')) as Seen & { credentials: Record<string, string>; ownToken: boolean };
    expect(result.credentials).toMatchObject({
      accessKeyId: 'ASIATESSERATEST',
      secretAccessKey: 'test-secret-access-key',
      sessionToken: 'test-session-token',
    });
    expect(result.ownToken).toBe(true);
    expect(result.env).toMatchObject({ AWS_ROLE_ARN: ROLE_ARN, AWS_ROLE_SESSION_NAME: run.id });
    expect(result.env).not.toHaveProperty('AWS_ACCESS_KEY_ID');
    expect(result.fileMode).toBe(0o600);
    expect(result.dirMode).toBe(0o700);
    const exchange = exchanges.find((e) => e.cloud === 'aws' && e.claims?.run_id === run.id);
    expect(exchange?.claims).toMatchObject({ aud: 'sts.amazonaws.com', sub: sub('aws-interop'), run_attempt: 1 });
    expect(exchange?.params.RoleSessionName).toBe(run.id);
    await waitFor(() => !existsSync(dirname(result.env.AWS_WEB_IDENTITY_TOKEN_FILE as string)), { what: 'the token directory to go' });
  });

  it("google-auth-library's external-account client exchanges the projected token at the configured STS and impersonates", async () => {
    const tokenUrl = `${cloudsUrl}/gcp/v1/token`;
    const impersonation = `${cloudsUrl}/gcp/v1/projects/-/serviceAccounts/${SERVICE_ACCOUNT}:generateAccessToken`;
    await deploy(
      'gcp-interop',
      'gcpClient',
      {
        audiences: [GCP_AUDIENCE],
        tokenFiles: { gcp: { audience: GCP_AUDIENCE, tokenUrl, serviceAccountImpersonationUrl: impersonation } },
      },
      // Without it, Application Default Credentials look the project up at Cloud Resource Manager (not faked here).
      { GOOGLE_CLOUD_PROJECT: 'tessera-test' },
    );
    const out = join(project.dir, 'gcp.json');
    const run = await server.client.runDeployment('gcp-interop', { parameters: { out } });
    const done = await finished(run.id);
    expect(done.state.type, done.state.message ?? '').toBe('COMPLETED');
    const result = JSON.parse(readFileSync(out, 'utf8')) as Seen & { accessToken: string; config: Record<string, unknown> };
    expect(result.accessToken).toBe('ya29.impersonated-for-tessera');
    expect(result.config).toMatchObject({
      type: 'external_account',
      audience: GCP_AUDIENCE,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      token_url: tokenUrl,
      service_account_impersonation_url: impersonation,
      credential_source: { file: join(dirname(result.env.GOOGLE_APPLICATION_CREDENTIALS as string), 'gcp-subject-token') },
    });
    expect(result.env.CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE).toBe(result.env.GOOGLE_APPLICATION_CREDENTIALS);
    expect(result.fileMode).toBe(0o600);
    const exchange = exchanges.find((e) => e.cloud === 'gcp' && e.claims?.run_id === run.id);
    expect(exchange?.claims).toMatchObject({ aud: GCP_AUDIENCE, sub: sub('gcp-interop') });
    expect(exchanges.some((e) => e.cloud === 'gcp-impersonation')).toBe(true);
  });
});

describe('Azure token file, refresh and cleanup', () => {
  it('sets the Azure variables, refreshes the token before 80% of its lifetime, and removes the 0700 directory when the run ends', async () => {
    await deploy('azure-refresh', 'holdTokens', {
      audiences: ['api://AzureADTokenExchange'],
      tokenFiles: { azure: { clientId: '00000000-0000-0000-0000-0000000000c1', tenantId: 'tenant-1', lifetimeMs: 3_000 } },
    });
    const out = join(project.dir, 'azure.json');
    const run = await server.client.runDeployment('azure-refresh', { parameters: { out, ms: 4_000 } });
    const seen = await waitFor(() => existsSync(out) && (JSON.parse(readFileSync(out, 'utf8')) as Seen), {
      what: 'the flow to start',
      timeoutMs: 30_000,
    });
    expect(seen.env).toMatchObject({ AZURE_CLIENT_ID: '00000000-0000-0000-0000-0000000000c1', AZURE_TENANT_ID: 'tenant-1' });
    expect(seen.env).not.toHaveProperty('AZURE_AUTHORITY_HOST');
    const file = seen.env.AZURE_FEDERATED_TOKEN_FILE as string;
    const dir = dirname(file);
    expect(dirname(dir)).toBe(tokenBase);
    expect(statSync(dir).mode & 0o777).toBe(0o700);

    const jwks = createRemoteJWKSet(new URL(`${server.issuer}/.well-known/jwks.json`));
    const first = readFileSync(file, 'utf8');
    const firstClaims = decodeJwt(first);
    expect(firstClaims).toMatchObject({ aud: 'api://AzureADTokenExchange', sub: sub('azure-refresh'), run_id: run.id });
    expect((firstClaims.exp as number) - (firstClaims.iat as number)).toBe(3);
    // Asked again at 2.25 s (75%), in the file before 2.4 s (80%): well before the 3 s token expires.
    const second = await waitFor(
      () => {
        const text = readFileSync(file, 'utf8');
        return decodeJwt(text).jti !== firstClaims.jti ? text : undefined;
      },
      { what: 'a refreshed token', timeoutMs: 5_000, intervalMs: 50 },
    );
    const { payload } = await jwtVerify(second, jwks, { issuer: server.issuer, audience: 'api://AzureADTokenExchange' });
    expect(payload.sub).toBe(sub('azure-refresh'));
    expect(payload.iat as number).toBeGreaterThan(firstClaims.iat as number);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    const done = await finished(run.id);
    expect(done.state.type).toBe('COMPLETED');
    await waitFor(() => !existsSync(dir), { what: 'the token directory to be removed', timeoutMs: 5_000 });
    expect(runDirs()).toEqual([]);
  });

  it('never wrote a token to the worker output or the server log', () => {
    const everything = `${worker.output()}\n${server.logs.join('\n')}`;
    expect(everything).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
    expect(everything).toContain('token files ready');
  });
});

describe('deploying token files', () => {
  it('refuses, at deploy time, a token file whose audience the deployment does not allow', async () => {
    project.write(
      'tessera.yaml',
      [
        'deployments:',
        '  - name: aws-refused',
        '    entrypoint: flows.ts:holdTokens',
        '    work_pool: default',
        '    identity:',
        '      audiences: [vault.internal]',
        '      token_files:',
        `        aws: { role_arn: "${ROLE_ARN}" }`,
        '',
      ].join('\n'),
    );
    const res = await runCli(['deploy', '--file', join(project.dir, 'tessera.yaml')], { env: { TESSERA_API_URL: server.url } });
    const output = res.stdout + res.stderr;
    expect(res.code, output).not.toBe(0);
    expect(output).toContain('the server rejected deployment "aws-refused": ERR_VALIDATION');
    expect(output).toContain('identity.tokenFiles.aws.audience: "sts.amazonaws.com" (the AWS default) is not in identity.audiences');
    expect(output).toContain('add "sts.amazonaws.com" to identity.audiences');
    await expect(server.client.getDeployment('aws-refused')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_DEPLOYMENT' });
  });
});
