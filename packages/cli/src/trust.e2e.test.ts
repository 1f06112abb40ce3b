/**
 * End-to-end: `tessera token …` and `tessera trust …` (the built CLI in a subprocess) against a real
 * server whose public URL is https (as AWS and GCP require), with real tokens of two deployments
 * obtained by claiming their runs as a worker would.
 * Needs the build: `npm run build`.
 */
import { randomUUID } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApiClient } from '@tessera/core';
import { runCli, startTestServer, type TestServer } from '@tessera/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ISSUER = 'https://tessera.example.test';
const GCP_AUDIENCE = 'https://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/tessera/providers/tessera';
const AUDIENCES = ['sts.amazonaws.com', 'api://AzureADTokenExchange', 'vault.internal', GCP_AUDIENCE];

let server: TestServer;
let dir: string;
/** Tokens by deployment, then audience. */
const tokens: Record<string, Record<string, string>> = {};
const runs: Record<string, string> = {};

function tessera(args: string[]) {
  return runCli(args, { cwd: dir, env: { TESSERA_API_URL: server.url, TESSERA_HOME: dir, NO_COLOR: '1' } });
}

async function deploy(client: ApiClient, name: string): Promise<void> {
  await client.putDeployment({
    name,
    flowName: 'etl',
    entrypoint: 'flows.ts:etl',
    path: '/tmp',
    workPool: 'default',
    environment: 'prod',
    identity: { audiences: AUDIENCES },
  });
}

beforeAll(async () => {
  server = await startTestServer({ backgroundServices: false, publicUrl: ISSUER });
  dir = mkdtempSync(join(tmpdir(), 'tessera-trust-e2e-'));
  const client = server.client;
  await client.createWorkPool({ name: 'default' });
  for (const name of ['nightly-etl', 'reports']) {
    await deploy(client, name);
    runs[name] = (await client.runDeployment(name)).id;
  }
  const poll = await client.poll('default', { workerId: randomUUID(), workerName: 'w-1', capacity: 2, running: [], waitMs: 0 });
  for (const claimed of poll.runs) {
    const name = claimed.run.deploymentName as string;
    const as = client.withToken(claimed.credential);
    await as.proposeState(claimed.run.id, { state: { type: 'RUNNING' } });
    tokens[name] = {};
    for (const audience of AUDIENCES) tokens[name][audience] = (await as.issueIdentityToken({ audience })).token;
  }
  expect(Object.keys(tokens).sort()).toEqual(['nightly-etl', 'reports']);
});

afterAll(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const etl = (aud: string) => tokens['nightly-etl']?.[aud] as string;
const reports = (aud: string) => tokens.reports?.[aud] as string;

describe('tessera token decode / verify', () => {
  it('decodes header and claims with local times, never printing the token', async () => {
    const token = etl('sts.amazonaws.com');
    const r = await tessera(['token', 'decode', token]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^header +alg RS256 · typ JWT · kid \S+/);
    expect(r.stdout).toMatch(
      /^header +alg.*\niss +https:\/\/tessera\.example\.test\nsub +ws:default:deployment:nightly-etl:env:prod\naud +sts\.amazonaws\.com\n/,
    );
    expect(r.stdout).toMatch(/\nexp +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in \d+ m\) {2}lifetime 5 m 0 s\n/);
    expect(r.stdout).not.toContain(token);
    expect(r.stdout).toContain(`token …${token.slice(-6)} — not verified`);
    const file = join(dir, 'token.jwt');
    writeFileSync(file, `${token}\n`);
    const json = await tessera(['token', 'decode', file, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({
      header: { alg: 'RS256', typ: 'JWT' },
      claims: { iss: ISSUER, aud: 'sts.amazonaws.com' },
    });
    const bad = await tessera(['token', 'decode', 'not-a-token']);
    expect(bad.code).toBe(2);
  });

  it('verifies with @tessera/verify, and refuses another audience with its code', async () => {
    const jwks = ['--jwks-uri', `${server.url}/.well-known/jwks.json`];
    const ok = await tessera(['token', 'verify', etl('vault.internal'), '--issuer', ISSUER, '--audience', 'vault.internal', ...jwks]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^✓ verified {2}sub "ws:default:deployment:nightly-etl:env:prod" · aud "vault.internal"/);
    const wrong = await tessera(['token', 'verify', etl('vault.internal'), '--issuer', ISSUER, '--audience', 'sts.amazonaws.com', ...jwks]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^error ERR_AUDIENCE_MISMATCH: /);
  });
});

const GENERATE: Record<string, { args: string[]; audience: string; refusal: RegExp }> = {
  aws: {
    args: ['--account-id', '123456789012'],
    audience: 'sts.amazonaws.com',
    refusal: /→ AWS would answer: AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity/,
  },
  gcp: {
    args: ['--project-number', '123456789', '--pool', 'tessera', '--provider', 'tessera'],
    audience: GCP_AUDIENCE,
    refusal: /→ Google Cloud would answer: unauthorized_client: The given credential is rejected by the attribute condition\./,
  },
  azure: {
    args: ['--client-id', '00000000-0000-0000-0000-000000000001'],
    audience: 'api://AzureADTokenExchange',
    refusal: /→ Microsoft Entra would answer: AADSTS700213: /,
  },
  vault: {
    args: ['--audience', 'vault.internal'],
    audience: 'vault.internal',
    refusal: /→ Vault would answer: error validating token: invalid subject \(sub\) claim/,
  },
};

describe('tessera trust generate → token explain → trust lint', () => {
  for (const [target, g] of Object.entries(GENERATE)) {
    it(`${target}: the generated configuration accepts its deployment's real token, refuses another deployment's, and lints clean`, async () => {
      const file = join(dir, `${target}.json`);
      const gen = await tessera(['trust', 'generate', '--deployment', 'nightly-etl', '--target', target, ...g.args, '--out', file]);
      expect(gen.stderr).toBe('');
      expect(gen.code).toBe(0);
      expect(gen.stdout).toContain(`✓ wrote ${file}`);
      expect(gen.stdout).toContain(`trusts   iss ${ISSUER} · aud ${g.audience} · sub ws:default:deployment:nightly-etl:env:prod`);
      expect(gen.stdout).toContain('apply:');

      const own = await tessera(['token', 'explain', etl(g.audience), '--config', file]);
      expect(own.stderr).toBe('');
      expect(own.stdout).toContain('✓ signature: verifies with RS256');
      expect(own.stdout).toMatch(/✓ accepted by /);
      expect(own.code).toBe(0);

      const other = await tessera(['token', 'explain', reports(g.audience), '--config', file]);
      expect(other.code).toBe(1);
      expect(other.stdout).toMatch(/✗ .*/);
      expect(other.stdout).toMatch(g.refusal);
      expect(other.stdout).toContain('deployment differs');

      const lint = await tessera(['trust', 'lint', file]);
      expect(lint.code).toBe(0);
      expect(lint.stdout).toContain('no findings');
      expect(lint.stdout).toContain(`issuer compared with ${ISSUER}`);
    });
  }

  it('prints the configuration on stdout without --out, and JSON with --json', async () => {
    const r = await tessera(['trust', 'generate', '-d', 'nightly-etl', '-t', 'aws', '--account-id', '123456789012']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      Statement: [{ Principal: { Federated: 'arn:aws:iam::123456789012:oidc-provider/tessera.example.test' } }],
    });
    expect(r.stderr).toContain(
      'aws iam create-open-id-connect-provider --url https://tessera.example.test --client-id-list sts.amazonaws.com',
    );
    const j = await tessera(['trust', 'generate', '-d', 'nightly-etl', '-t', 'vault', '--audience', 'vault.internal', '--json']);
    expect(JSON.parse(j.stdout)).toMatchObject({
      target: 'vault',
      audience: 'vault.internal',
      config: { role: { bound_subject: 'ws:default:deployment:nightly-etl:env:prod' } },
    });
  });

  it('names the missing flag (exit 2) and an unknown deployment (exit 1)', async () => {
    const missing = await tessera(['trust', 'generate', '-d', 'nightly-etl', '-t', 'aws']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--account-id is required for --target aws');
    const unknown = await tessera(['trust', 'generate', '-d', 'nope', '-t', 'aws', '--account-id', '123456789012']);
    expect(unknown.code).toBe(1);
  });
});

describe('tessera token explain', () => {
  it('--run builds the claims the run would get and explains them', async () => {
    const file = join(dir, 'aws.json');
    const own = await tessera([
      'token',
      'explain',
      '--run',
      (runs['nightly-etl'] as string).slice(0, 8),
      '--audience',
      'sts.amazonaws.com',
      '--config',
      file,
    ]);
    expect(own.stderr).toBe('');
    expect(own.code).toBe(0);
    expect(own.stdout).toContain('✓ Tessera issues "sts.amazonaws.com" tokens to deployment nightly-etl');
    const other = await tessera(['token', 'explain', '--run', runs.reports as string, '--audience', 'sts.amazonaws.com', '--config', file]);
    expect(other.code).toBe(1);
    expect(other.stdout).toContain('token sub is "ws:default:deployment:reports:env:prod" (deployment differs)');
    const notAllowed = await tessera([
      'token',
      'explain',
      '--run',
      runs.reports as string,
      '--audience',
      'sts.amazon.com',
      '--config',
      file,
      '--json',
    ]);
    expect(notAllowed.code).toBe(1);
    expect(JSON.parse(notAllowed.stdout)).toMatchObject({ verdict: 'refused', answer: expect.stringMatching(/^ERR_AUDIENCE_NOT_ALLOWED/) });
  });

  it('refuses a tampered token on its signature', async () => {
    const [h, p, s] = etl('sts.amazonaws.com').split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    claims.sub = 'ws:default:deployment:reports:env:prod';
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    const r = await tessera(['token', 'explain', forged, '--config', join(dir, 'aws.json'), '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).checks[0]).toMatchObject({ id: 'signature', ok: false });
  });

  it('explains against a generic verifier given on the command line, judging at --now', async () => {
    const token = etl('vault.internal');
    const exp = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).exp as number;
    const args = ['token', 'explain', token, '--target', 'generic', '--issuer', ISSUER, '--audience', 'vault.internal', '--offline'];
    expect((await tessera(args)).code).toBe(0);
    const late = await tessera([...args, '--now', new Date((exp + 120) * 1000).toISOString()]);
    expect(late.code).toBe(1);
    expect(late.stdout).toContain('→ the service would answer: ERR_TOKEN_EXPIRED: the token has expired');
  });
});

describe('tessera trust lint', () => {
  it('exits 1 on an error finding, naming its id and fix; --json lists findings', async () => {
    const file = join(dir, 'risky.json');
    copyFileSync(new URL('../../verify/src/explain/fixtures/lint/sub-wildcard-deployment.json', import.meta.url), file);
    const r = await tessera(['trust', 'lint', file, '--issuer', 'https://tessera.example.com']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /✗ error +sub-wildcard-deployment {2}sub pattern "ws:default:deployment:\*" matches other deployments of the workspace/,
    );
    expect(r.stdout).toContain('fix: pin sub exactly with StringEquals');
    const j = await tessera(['trust', 'lint', file, '--json', '--issuer', 'https://tessera.example.com']);
    expect(JSON.parse(j.stdout).findings.map((f: { id: string }) => f.id)).toContain('sub-wildcard-deployment');
  });

  it('reports an unreadable or unrecognised file as a configuration error (exit 2)', async () => {
    const file = join(dir, 'weird.json');
    writeFileSync(file, '{"hello": 1}');
    const r = await tessera(['trust', 'lint', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('pass --target');
    writeFileSync(file, '{nope');
    expect((await tessera(['trust', 'lint', file])).stderr).toMatch(/^error ERR_CONFIG: .*weird.json: not JSON/);
    expect(readFileSync(file, 'utf8')).toBe('{nope');
  });
});
