/**
 * A tiny Tessera API on 127.0.0.1 for SDK tests: real HTTP, real JSON, a real state machine
 * (core's checkTransition), run credentials that die with the run. It records every request.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type AdhocRunResponse,
  ApiClient,
  type CreateAdhocRunRequest,
  checkTransition,
  type FlowRun,
  type IdentityTokenRequest,
  isTerminal,
  type LogEntry,
  type ProposeStateRequest,
  RUN_CREDENTIAL_PREFIX,
  STATE_NAMES,
  type TaskRunEvent,
} from '@tessera/core';

export interface RecordedRequest {
  method: string;
  path: string;
  auth: string | undefined;
  body: unknown;
}

export interface FakeServerOptions {
  /** Audiences identity tokens may be issued for. */
  audiences?: string[];
  /** Delay before answering each batch request, ms. */
  batchLatencyMs?: number;
}

export class FakeServer {
  readonly requests: RecordedRequest[] = [];
  readonly runs = new Map<string, FlowRun>();
  readonly eventBatches: TaskRunEvent[][] = [];
  readonly logBatches: LogEntry[][] = [];
  readonly tokenRequests: IdentityTokenRequest[] = [];
  readonly proposals: { runId: string; body: ProposeStateRequest }[] = [];
  private readonly credentials = new Map<string, string>();
  private server!: Server;
  baseUrl = '';

  constructor(private readonly options: FakeServerOptions = {}) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      void this.handle(req, res).catch((e) => send(res, 500, { error: 'Error', code: 'ERR_INTERNAL', message: String(e) }));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.baseUrl = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** A client as a person would use it (no run credential). */
  client(): ApiClient {
    return new ApiClient({ baseUrl: this.baseUrl });
  }

  get events(): TaskRunEvent[] {
    return this.eventBatches.flat();
  }

  get logs(): LogEntry[] {
    return this.logBatches.flat();
  }

  /** Seeds a run as a worker would have claimed it (Pending) and returns its credential. */
  addRun(init: Partial<FlowRun> & { flowName: string }): AdhocRunResponse {
    const now = new Date().toISOString();
    const run: FlowRun = {
      id: randomUUID(),
      name: `run-${randomBytes(3).toString('hex')}`,
      flowId: randomUUID(),
      deploymentId: null,
      deploymentName: null,
      workPool: null,
      workQueue: null,
      state: { type: 'PENDING', name: 'Pending', timestamp: now },
      parameters: {},
      attempt: 0,
      maxRetries: 0,
      retryDelaysMs: [0],
      expectedStartTime: now,
      nextScheduledStartTime: null,
      startTime: null,
      endTime: null,
      workerId: null,
      workerName: null,
      triggerKind: 'adhoc',
      triggeredBy: { kind: 'person', id: 'tester' },
      result: null,
      error: null,
      tags: [],
      idempotencyKey: null,
      createdAt: now,
      updatedAt: now,
      ...init,
    };
    this.runs.set(run.id, run);
    const credential = `${RUN_CREDENTIAL_PREFIX}${randomBytes(24).toString('base64url')}`;
    this.credentials.set(credential, run.id);
    return { run, credential };
  }

  /** Moves a run to a state directly, as another actor (e.g. a person cancelling) would. */
  setState(runId: string, type: FlowRun['state']['type'], name?: string): void {
    const run = this.runs.get(runId);
    if (!run) throw new Error('no such run');
    run.state = { type, name: name ?? STATE_NAMES[type], timestamp: new Date().toISOString() };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const body: unknown = text ? JSON.parse(text) : undefined;
    const url = new URL(req.url ?? '/', 'http://x');
    const auth = req.headers.authorization?.replace(/^Bearer /, '');
    this.requests.push({ method: req.method ?? '', path: url.pathname, auth, body });
    const runOf = (): FlowRun | null => {
      const id = auth ? this.credentials.get(auth) : undefined;
      return id ? (this.runs.get(id) ?? null) : null;
    };
    const denied = (): void =>
      send(res, 401, { error: 'TesseraError', code: 'ERR_CREDENTIAL_INVALID', message: 'run credential invalid or revoked' });
    const path = url.pathname;
    const runPath = path.match(/^\/api\/flow-runs\/([^/]+)$/);
    const statePath = path.match(/^\/api\/flow-runs\/([^/]+)\/state$/);

    if (req.method === 'POST' && path === '/api/flow-runs') {
      const b = body as CreateAdhocRunRequest;
      return send(
        res,
        201,
        this.addRun({
          flowName: b.flowName,
          parameters: b.parameters ?? {},
          maxRetries: b.maxRetries ?? 0,
          retryDelaysMs: b.retryDelaysMs ?? [0],
          tags: b.tags ?? [],
          attempt: 1,
        }),
      );
    }
    if (req.method === 'GET' && runPath) {
      const run = runOf();
      if (!run || run.id !== runPath[1]) return denied();
      return send(res, 200, run);
    }
    if (req.method === 'POST' && statePath) {
      const run = runOf();
      if (!run || run.id !== statePath[1]) return denied();
      const b = body as ProposeStateRequest;
      this.proposals.push({ runId: run.id, body: b });
      const reason = checkTransition('flow_run', run.state.type, b.state.type);
      if (reason) return send(res, 409, { error: 'IllegalTransitionError', code: 'ERR_ILLEGAL_TRANSITION', message: reason });
      const now = new Date().toISOString();
      // Like the real server: attempts are counted when a run is claimed (Pending), not when it starts.
      if (b.state.type === 'PENDING' && run.state.type === 'SCHEDULED') run.attempt += 1;
      if (b.state.type === 'RUNNING') run.startTime ??= now;
      run.state = { type: b.state.type, name: b.state.name ?? STATE_NAMES[b.state.type], message: b.state.message ?? null, timestamp: now };
      if (b.state.type === 'COMPLETED') run.result = b.result ?? null;
      if (b.error) run.error = b.error;
      let retryScheduled = false;
      if (b.state.type === 'FAILED' && run.attempt >= 1 && run.attempt <= run.maxRetries) {
        const delay = run.retryDelaysMs[Math.min(run.attempt, run.retryDelaysMs.length) - 1] ?? 0;
        run.state = { type: 'SCHEDULED', name: 'AwaitingRetry', timestamp: now };
        run.nextScheduledStartTime = new Date(Date.now() + delay).toISOString();
        retryScheduled = true;
      } else if (isTerminal(run.state.type)) {
        run.endTime = now;
        for (const [cred, id] of this.credentials) if (id === run.id) this.credentials.delete(cred);
      }
      return send(res, 200, { status: 'ACCEPT', run, ...(retryScheduled ? { retryScheduled } : {}) });
    }
    if (req.method === 'POST' && path === '/api/task-runs/events') {
      const run = runOf();
      if (!run) return denied();
      const { events } = body as { events: TaskRunEvent[] };
      if (this.options.batchLatencyMs) await new Promise((r) => setTimeout(r, this.options.batchLatencyMs));
      this.eventBatches.push(events);
      return send(res, 200, { accepted: events.length });
    }
    if (req.method === 'POST' && path === '/api/logs') {
      const run = runOf();
      if (!run) return denied();
      const { entries } = body as { entries: LogEntry[] };
      this.logBatches.push(entries);
      return send(res, 200, { accepted: entries.length });
    }
    if (req.method === 'POST' && path === '/api/identity/token') {
      const run = runOf();
      if (!run) return denied();
      const b = body as IdentityTokenRequest;
      this.tokenRequests.push(b);
      const allowed = this.options.audiences ?? [];
      if (!allowed.includes(b.audience)) {
        return send(res, 403, {
          error: 'TesseraError',
          code: 'ERR_AUDIENCE_NOT_ALLOWED',
          message: `audience "${b.audience}" is not allowed for this run; allowed: ${allowed.join(', ') || 'none'}`,
        });
      }
      const enc = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
      const claims = { sub: `flow:${run.flowName}`, aud: b.audience, run_id: run.id, task_run_id: b.taskRunId, jti: randomUUID() };
      const token = `${enc({ alg: 'RS256', typ: 'JWT', kid: 'k1' })}.${enc(claims)}.${randomBytes(32).toString('base64url')}`;
      return send(res, 200, {
        token,
        tokenType: 'JWT',
        expiresAt: new Date(Date.now() + 300_000).toISOString(),
        jti: claims.jti,
        kid: 'k1',
        alg: 'RS256',
        sub: claims.sub,
        aud: b.audience,
      });
    }
    send(res, 404, { error: 'TesseraError', code: 'ERR_NOT_FOUND', message: `no route ${req.method} ${path}` });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function startFakeServer(options?: FakeServerOptions): Promise<FakeServer> {
  return new FakeServer(options).start();
}
