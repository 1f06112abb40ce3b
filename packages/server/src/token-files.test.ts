import { randomUUID } from 'node:crypto';
import type { DeploymentSpec, TesseraError } from '@tessera/core';
import { startTestServer, type TestServer } from '@tessera/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROLE = 'arn:aws:iam::123456789012:role/etl';
const GCP_AUDIENCE = '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/tessera/providers/tessera';

async function refusal(p: Promise<unknown>): Promise<TesseraError> {
  try {
    await p;
  } catch (e) {
    return e as TesseraError;
  }
  throw new Error('expected a refusal');
}

describe('token files at deploy time and at claim time', () => {
  let server: TestServer;

  const deploy = (name: string, identity: DeploymentSpec['identity']) =>
    server.client.putDeployment({ name, flowName: 'etl', entrypoint: 'flows.ts:etl', path: '/tmp', workPool: 'default', identity });

  beforeAll(async () => {
    server = await startTestServer({ backgroundServices: false, settings: { minTokenLifetimeMs: 2_000 } });
    await server.client.createWorkPool({ name: 'default' });
  });
  afterAll(async () => server.close());

  it('refuses an AWS token file whose default audience is not in identity.audiences, naming the field and what to add', async () => {
    const err = await refusal(deploy('etl-aws', { audiences: ['vault.internal'], tokenFiles: { aws: { roleArn: ROLE } } }));
    expect(err.code).toBe('ERR_VALIDATION');
    expect(err.details).toEqual({ field: 'identity.tokenFiles.aws.audience' });
    expect(err.message).toBe(
      'identity.tokenFiles.aws.audience: "sts.amazonaws.com" (the AWS default) is not in identity.audiences of deployment "etl-aws" (allowed: vault.internal); add "sts.amazonaws.com" to identity.audiences, or set identity.tokenFiles.aws.audience to one of them',
    );
    await expect(server.client.getDeployment('etl-aws')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_DEPLOYMENT' });
  });

  it('refuses GCP and Azure token files whose audience is not allowed', async () => {
    const gcp = await refusal(deploy('etl-gcp', { audiences: [], tokenFiles: { gcp: { audience: GCP_AUDIENCE } } }));
    expect(gcp.code).toBe('ERR_VALIDATION');
    expect(gcp.details).toEqual({ field: 'identity.tokenFiles.gcp.audience' });
    expect(gcp.message).toContain(`"${GCP_AUDIENCE}" is not in identity.audiences of deployment "etl-gcp" (allowed: none); add`);
    const azure = await refusal(
      deploy('etl-azure', {
        audiences: ['api://AzureADTokenExchange'],
        tokenFiles: { azure: { clientId: 'c', tenantId: 't', audience: 'api://AzureADTokenExchange/custom' } },
      }),
    );
    expect(azure.details).toEqual({ field: 'identity.tokenFiles.azure.audience' });
    expect(azure.message).toContain('"api://AzureADTokenExchange/custom" is not in identity.audiences');
  });

  it('refuses a token-file lifetime outside the deployment bounds, and a GCP endpoint over plain http', async () => {
    const long = await refusal(
      deploy('etl-long', {
        audiences: ['sts.amazonaws.com'],
        maxLifetimeMs: 600_000,
        tokenFiles: { aws: { roleArn: ROLE, lifetimeMs: 3_600_000 } },
      }),
    );
    expect(long.details).toEqual({ field: 'identity.tokenFiles.aws.lifetimeMs' });
    expect(long.message).toContain('3600 s is outside what deployment "etl-long" allows (2 s to 600 s');
    const short = await refusal(
      deploy('etl-short', { audiences: ['sts.amazonaws.com'], tokenFiles: { aws: { roleArn: ROLE, lifetimeMs: 1_000 } } }),
    );
    expect(short.details).toEqual({ field: 'identity.tokenFiles.aws.lifetimeMs' });
    const http = await refusal(
      deploy('etl-http', {
        audiences: [GCP_AUDIENCE],
        tokenFiles: { gcp: { audience: GCP_AUDIENCE, tokenUrl: 'http://sts.example.com/v1/token' } },
      }),
    );
    expect(http.details).toEqual({ field: 'identity.tokenFiles.gcp.tokenUrl' });
    expect(http.message).toContain('is not an https URL');
  });

  it('hands the token files to the worker with the claim, and the run credential gets the short tokens they ask for', async () => {
    const tokenFiles = {
      aws: { roleArn: ROLE, lifetimeMs: 3_000 },
      gcp: { audience: GCP_AUDIENCE, tokenUrl: 'http://127.0.0.1:9/v1/token' },
      azure: { clientId: 'c', tenantId: 't' },
    };
    await deploy('etl-all', { audiences: ['sts.amazonaws.com', GCP_AUDIENCE, 'api://AzureADTokenExchange'], tokenFiles });
    await deploy('etl-none', { audiences: ['vault.internal'] });
    await deploy('etl-capped', {
      audiences: ['api://AzureADTokenExchange'],
      maxLifetimeMs: 600_000,
      tokenFiles: { azure: { clientId: 'c', tenantId: 't' } },
    });
    const withFiles = await server.client.runDeployment('etl-all');
    const without = await server.client.runDeployment('etl-none');
    const capped = await server.client.runDeployment('etl-capped');
    const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w-1', capacity: 3, running: [], waitMs: 0 });
    expect(poll.runs.find((c) => c.run.id === capped.id)?.tokenFiles?.azure?.lifetimeMs).toBe(600_000);
    const claimed = poll.runs.find((c) => c.run.id === withFiles.id);
    // Azure SDKs cache the file for minutes: its token lives an hour unless set otherwise.
    expect(claimed?.tokenFiles).toEqual({ ...tokenFiles, azure: { ...tokenFiles.azure, lifetimeMs: 3_600_000 } });
    expect(poll.runs.find((c) => c.run.id === without.id)).not.toHaveProperty('tokenFiles');

    const as = server.client.withToken(claimed?.credential);
    const token = await as.issueIdentityToken({ audience: 'sts.amazonaws.com', lifetime: 3_000 });
    expect(Date.parse(token.expiresAt) - Date.now()).toBeLessThanOrEqual(3_000);
    const tooShort = await refusal(as.issueIdentityToken({ audience: 'sts.amazonaws.com', lifetime: 1_000 }));
    expect(tooShort.code).toBe('ERR_VALIDATION');
    expect(tooShort.message).toContain('(2 s to 3600 s)');
  });
});
