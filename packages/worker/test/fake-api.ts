/**
 * A small fake of the Tessera REST API on real `node:http` (127.0.0.1, ephemeral port): just the
 * routes a worker and a flow process use, with the server's rules that matter to them (held
 * polls, claims up to capacity, run credentials that die with the run, 409 on illegal transitions).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type ClaimedRun,
  checkTransition,
  type FlowRun,
  type IdentityTokenRequest,
  isTerminal,
  type ProposeStateRequest,
  STATE_NAMES,
  type StateType,
  type TokenFilesSpec,
  type WorkerPollRequest,
  type WorkerPollResponse,
} from '@tessera/core';

export interface FakeRun {
  run: FlowRun;
  claim: Omit<ClaimedRun, 'run' | 'credential'>;
  credential: string | undefined;
  revoked: boolean;
}

export interface RecordedPoll {
  at: number;
  body: WorkerPollRequest;
}

export interface RecordedProposal {
  at: number;
  runId: string;
  body: ProposeStateRequest;
  /** 'credential': sent with the run's credential; 'anonymous': without a token (the worker's fallback). */
  auth: 'credential' | 'anonymous';
  status: number;
}

export interface EnqueueOptions {
  path: string;
  env?: Record<string, string>;
  tokenFiles?: TokenFilesSpec;
  entrypoint?: string;
  name?: string;
}

interface Waiter {
  body: WorkerPollRequest;
  res: ServerResponse;
  timer: NodeJS.Timeout;
}

export class FakeTesseraApi {
  readonly runs = new Map<string, FakeRun>();
  readonly polls: RecordedPoll[] = [];
  readonly proposals: RecordedProposal[] = [];
  readonly queue: string[] = [];
  /** When set, every state proposal is answered 409. */
  rejectProposals = false;
  /** Identity tokens handed out (unsigned, JWT-shaped: the worker only reads `exp - iat`). */
  readonly tokens: { runId: string; audience: string; token: string }[] = [];
  /** Audiences the identity-token route refuses with 403 ERR_AUDIENCE_NOT_ALLOWED. */
  readonly refusedAudiences = new Set<string>();
  /** Lifetime of the identity tokens handed out, s. */
  tokenLifetimeS = 60;
  port = 0;
  private server: Server | undefined;
  private readonly waiters = new Set<Waiter>();
  private readonly pendingCancel = new Set<string>();
  private readonly pendingForget = new Set<string>();

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Listens on `port` (0: ephemeral; pass the old port to come back after {@link FakeTesseraApi.stop}). */
  async start(port = this.port): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => send(res, 500, { error: 'Error', code: 'ERR_INTERNAL', message: String(e) }));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /** Goes down hard, like a crashed or restarting server: held polls are cut. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const w of this.waiters) clearTimeout(w.timer);
    this.waiters.clear();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Adds a claimable run to the pool and wakes a held poll. */
  enqueue(options: EnqueueOptions): string {
    const id = randomUUID();
    const now = new Date().toISOString();
    const run: FlowRun = {
      id,
      name: options.name ?? `run-${id.slice(0, 4)}`,
      flowId: 'flow-1',
      flowName: 'test-flow',
      deploymentId: 'dep-1',
      deploymentName: 'test-deployment',
      workPool: 'default',
      workQueue: null,
      state: { type: 'SCHEDULED', name: 'Scheduled', timestamp: now },
      parameters: {},
      attempt: 0,
      maxRetries: 0,
      retryDelaysMs: [],
      expectedStartTime: now,
      nextScheduledStartTime: null,
      startTime: null,
      endTime: null,
      workerId: null,
      workerName: null,
      triggerKind: 'manual',
      triggeredBy: { kind: 'person', id: 'tester' },
      result: null,
      error: null,
      tags: [],
      idempotencyKey: null,
      createdAt: now,
      updatedAt: now,
    };
    this.runs.set(id, {
      run,
      claim: {
        entrypoint: options.entrypoint ?? 'flows.ts:main',
        path: options.path,
        env: options.env ?? {},
        ...(options.tokenFiles ? { tokenFiles: options.tokenFiles } : {}),
      },
      credential: undefined,
      revoked: false,
    });
    this.queue.push(id);
    this.wake();
    return id;
  }

  /** Like `POST /flow-runs/:id/cancel`: the run becomes Cancelling and the worker is told on its next poll. */
  cancel(runId: string): void {
    this.setState(runId, 'CANCELLING');
    this.pendingCancel.add(runId);
    this.wake();
  }

  /** Like zombie detection: the server decides the run itself and tells the worker to forget it. */
  forget(runId: string, state: StateType = 'CRASHED'): void {
    this.setState(runId, state);
    this.pendingForget.add(runId);
    this.wake();
  }

  state(runId: string): StateType | undefined {
    return this.runs.get(runId)?.run.state.type;
  }

  /** True while a poll is being held open. */
  get holdingPoll(): boolean {
    return this.waiters.size > 0;
  }

  private setState(runId: string, type: StateType, message?: string): void {
    const fake = this.runs.get(runId);
    if (!fake) throw new Error(`no run ${runId}`);
    fake.run.state = { type, name: STATE_NAMES[type], timestamp: new Date().toISOString(), ...(message ? { message } : {}) };
    if (isTerminal(type)) fake.revoked = true;
  }

  private wake(): void {
    for (const w of [...this.waiters]) {
      const answer = this.answerFor(w.body);
      if (answer) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        send(w.res, 200, answer);
      }
    }
  }

  private answerFor(body: WorkerPollRequest): WorkerPollResponse | undefined {
    const cancel = [...this.pendingCancel];
    const forget = [...this.pendingForget];
    const runs: ClaimedRun[] = [];
    while (runs.length < body.capacity && this.queue.length > 0) {
      const id = this.queue.shift() as string;
      const fake = this.runs.get(id) as FakeRun;
      fake.credential = `tsr_${randomBytes(24).toString('base64url')}`;
      fake.run.attempt += 1;
      fake.run.workerId = body.workerId;
      fake.run.workerName = body.workerName;
      this.setState(id, 'PENDING');
      runs.push({ run: structuredClone(fake.run), credential: fake.credential, ...fake.claim });
    }
    if (runs.length === 0 && cancel.length === 0 && forget.length === 0) return undefined;
    this.pendingCancel.clear();
    this.pendingForget.clear();
    return { runs, cancel, forget };
  }

  /** `undefined`: no token; `null`: a token that is not this run's live credential. */
  private authFor(req: IncomingMessage, fake: FakeRun): 'credential' | 'anonymous' | null {
    const header = req.headers.authorization;
    if (!header) return 'anonymous';
    return !fake.revoked && header === `Bearer ${fake.credential}` ? 'credential' : null;
  }

  /** `POST /api/identity/token`: a token for the run whose live credential is presented. */
  private issueToken(req: IncomingMessage, res: ServerResponse, body: IdentityTokenRequest): void {
    const fake = [...this.runs.values()].find((r) => r.credential && req.headers.authorization === `Bearer ${r.credential}`);
    if (!fake || fake.revoked) {
      send(res, 401, { error: 'TesseraError', code: 'ERR_CREDENTIAL_REVOKED', message: 'the run credential is no longer valid' });
      return;
    }
    if (this.refusedAudiences.has(body.audience)) {
      send(res, 403, {
        error: 'TesseraError',
        code: 'ERR_AUDIENCE_NOT_ALLOWED',
        message: `audience "${body.audience}" is not allowed for deployment "test-deployment" — allowed: vault.internal.`,
      });
      return;
    }
    const iat = Math.floor(Date.now() / 1000);
    const jti = randomUUID();
    const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const payload = { aud: body.audience, iat, exp: iat + this.tokenLifetimeS, jti, run_id: fake.run.id };
    const token = `${part({ alg: 'none', typ: 'JWT' })}.${part(payload)}.${randomBytes(16).toString('base64url')}`;
    this.tokens.push({ runId: fake.run.id, audience: body.audience, token });
    send(res, 200, {
      token,
      tokenType: 'JWT',
      expiresAt: new Date((iat + this.tokenLifetimeS) * 1000).toISOString(),
      jti,
      kid: 'fake',
      alg: 'none',
      sub: 'ws:default:deployment:test-deployment:env:dev',
      aud: body.audience,
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const body = await readJson(req);
    const poll = url.pathname.match(/^\/api\/work-pools\/([^/]+)\/workers\/poll$/);
    if (req.method === 'POST' && poll) {
      const request = body as WorkerPollRequest;
      this.polls.push({ at: Date.now(), body: request });
      const answer = this.answerFor(request);
      if (answer) return send(res, 200, answer);
      const waiter: Waiter = {
        body: request,
        res,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          send(res, 200, { runs: [], cancel: [], forget: [] });
        }, request.waitMs ?? 10_000),
      };
      this.waiters.add(waiter);
      res.on('close', () => {
        clearTimeout(waiter.timer);
        this.waiters.delete(waiter);
      });
      return;
    }
    if (req.method === 'POST' && url.pathname === '/api/identity/token') {
      this.issueToken(req, res, body as IdentityTokenRequest);
      return;
    }
    const runRoute = url.pathname.match(/^\/api\/flow-runs\/([^/]+)(\/state)?$/);
    const fake = runRoute ? this.runs.get(decodeURIComponent(runRoute[1] as string)) : undefined;
    if (!runRoute || !fake)
      return send(res, 404, { error: 'TesseraError', code: 'ERR_NOT_FOUND', message: `no route or run for ${url.pathname}` });
    const auth = this.authFor(req, fake);
    if (auth === null) {
      return send(res, 401, { error: 'TesseraError', code: 'ERR_CREDENTIAL_REVOKED', message: 'the run credential is no longer valid' });
    }
    if (req.method === 'GET' && !runRoute[2]) return send(res, 200, fake.run);
    if (req.method === 'POST' && runRoute[2]) {
      const proposal = body as ProposeStateRequest;
      const to = proposal.state.type;
      const reason = this.rejectProposals ? 'rejected by the test' : checkTransition('flow_run', fake.run.state.type, to);
      const status = reason ? 409 : 200;
      this.proposals.push({ at: Date.now(), runId: fake.run.id, body: proposal, auth, status });
      if (reason) return send(res, 409, { error: 'IllegalTransitionError', code: 'ERR_ILLEGAL_TRANSITION', message: reason });
      this.setState(fake.run.id, to, proposal.state.message);
      return send(res, 200, { status: 'ACCEPT', run: fake.run });
    }
    return send(res, 405, { error: 'TesseraError', code: 'ERR_VALIDATION', message: `${req.method} not allowed` });
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.writableEnded || res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}
