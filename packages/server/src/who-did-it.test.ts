import { randomUUID } from 'node:crypto';
import { type ApiClient, createApiClient } from '@tessera/core';
import { startTestServer, type TestServer } from '@tessera/testing';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * Who did it: every run records the principal that created it, `triggered_by` in its identity tokens
 * says so, and every state change a person makes names the person. People get their access tokens
 * from login (tessera login mints them with the same service used here).
 */
describe('who did it', () => {
  let server: TestServer;
  let ana: ApiClient;
  let bob: ApiClient;

  const personClient = async (email: string, role: 'operator' | 'developer') => {
    const { accessToken } = await server.services.accessTokens.issue({
      kind: 'person',
      id: email,
      label: email,
      provider: 'corp-idp',
      grants: [{ role }],
      sessionId: randomUUID(),
    });
    return createApiClient({ baseUrl: server.url, token: accessToken });
  };
  const claimAndToken = async (runId: string) => {
    const poll = await server.services.claims.poll('default', {
      workerId: randomUUID(),
      workerName: 'w-1',
      capacity: 10,
      running: [],
      waitMs: 0,
    });
    const credential = poll.runs.find((r) => r.run.id === runId)?.credential;
    expect(credential).toBeDefined();
    const issued = await createApiClient({ baseUrl: server.url, token: credential }).issueIdentityToken({ audience: 'vault.internal' });
    return decodeJwt(issued.token);
  };

  beforeAll(async () => {
    server = await startTestServer({ backgroundServices: false, auth: { localAdmin: false } });
    ana = await personClient('ana@example.com', 'operator');
    bob = await personClient('bob@example.com', 'developer');
    await server.services.catalog.createWorkPool({ name: 'default' });
    await bob.putDeployment({
      name: 'nightly-etl',
      flowName: 'etl',
      entrypoint: 'flows.ts:etl',
      path: '/tmp',
      workPool: 'default',
      schedules: [{ cron: '* * * * *' }],
      identity: { audiences: ['vault.internal'] },
    });
  });
  afterAll(async () => server?.close());

  it('records the person who triggered a run, and says so in its tokens', async () => {
    const run = await ana.runDeployment('nightly-etl');
    expect(run.triggeredBy).toEqual({ kind: 'person', id: 'ana@example.com', label: 'ana@example.com' });
    const claims = await claimAndToken(run.id);
    expect(claims.trigger_kind).toBe('manual');
    expect(claims.triggered_by).toBe('person:ana@example.com');
  });

  it('records the schedule and the person who created it on a scheduled run', async () => {
    await server.services.scheduler.tick();
    const scheduled = (await bob.listFlowRuns({ deployment: 'nightly-etl' })).items.find((r) => r.triggerKind === 'schedule');
    expect(scheduled?.triggeredBy).toMatchObject({ kind: 'schedule', label: 'cron "* * * * *" (created by bob@example.com)' });
    const dep = await bob.getDeployment('nightly-etl');
    expect(scheduled?.triggeredBy.id).toBe(dep.schedules[0]?.id);
    expect(dep.schedules[0]?.createdBy).toEqual({ kind: 'person', id: 'bob@example.com', label: 'bob@example.com' });
    // Make it due now, claim it, and read its token.
    await server.services.ctx.db
      .updateTable('flow_runs')
      .set({
        next_scheduled_start_time: new Date(Date.now() - 1000).toISOString(),
        expected_start_time: new Date(Date.now() - 1000).toISOString(),
      })
      .where('id', '=', scheduled?.id as string)
      .execute();
    const claims = await claimAndToken(scheduled?.id as string);
    expect(claims.trigger_kind).toBe('schedule');
    expect(claims.triggered_by).toBe('schedule:cron "* * * * *" (created by bob@example.com)');
  });

  it('names the person in every state change a person makes', async () => {
    const run = await bob.runDeployment('nightly-etl');
    await ana.cancelFlowRun(run.id);
    const history = (await ana.getFlowRunStates(run.id)).items;
    expect(history.find((h) => h.type === 'SCHEDULED')?.cause).toEqual({ kind: 'person', id: 'bob@example.com', label: 'bob@example.com' });
    expect(history.find((h) => h.type === 'CANCELLED')?.cause).toEqual({ kind: 'person', id: 'ana@example.com', label: 'ana@example.com' });
    const revoked = await ana.revokeRunIdentity(run.id, { reason: 'test' });
    expect(JSON.stringify(revoked)).toContain('ana@example.com');
  });
});
