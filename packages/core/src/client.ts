import type {
  AdhocRunResponse,
  ClaimedRun,
  CreateAdhocRunRequest,
  CreateRunRequest,
  CreateWorkPoolRequest,
  CreateWorkQueueRequest,
  Deployment,
  DeploymentSpec,
  Flow,
  FlowRun,
  IdentityTokenRequest,
  IdentityTokenResponse,
  LogEntry,
  Page,
  ProposeStateRequest,
  ProposeStateResponse,
  StateHistoryEntry,
  TaskRun,
  TaskRunEvent,
  UpdateWorkPoolRequest,
  Worker,
  WorkerPollRequest,
  WorkerPollResponse,
  WorkPool,
  WorkQueue,
} from './api.js';
import { errorFromApiBody, TesseraError } from './errors.js';
import type {
  IdentityTokenPreview,
  IdentityTokenPreviewRequest,
  IntrospectionResponse,
  IssuedIdentityToken,
  PutWorkspaceIdentityRequest,
  RevokeRunIdentityRequest,
  RevokeRunIdentityResponse,
  WorkspaceIdentitySettings,
} from './identity-api.js';
import type { KeyPublication, ListSigningKeysResponse, RotateSigningKeysRequest, RotateSigningKeysResponse } from './keys-api.js';

/** Options for {@link createApiClient}. */
export interface ApiClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:4200`. */
  baseUrl: string;
  /** Bearer credential sent with every request (a run credential or access token). */
  token?: string | undefined;
  /**
   * Called before every request for the bearer credential, instead of `token`: for a caller whose
   * short-lived access token is refreshed as it nears expiry (the CLI after `tessera login`).
   */
  tokenProvider?: (() => Promise<string | undefined>) | undefined;
  /**
   * How long to keep retrying when the server is unreachable or answers 502/503/504, ms.
   * Requests that the server answered with a 4xx are never retried.
   * @default 0 (no retries)
   */
  retryForMs?: number;
  /** Called before each retry, for progress messages. */
  onRetry?: (info: { attempt: number; delayMs: number; error: Error }) => void;
  /** Per-request timeout, ms. @default 30000 */
  timeoutMs?: number;
}

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** Overrides the client's retry window for this request. */
  retryForMs?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Extra request headers (e.g. `DPoP`). */
  headers?: Record<string, string>;
}

const RETRY_STATUS = new Set([502, 503, 504]);

/**
 * A small typed HTTP client for the Tessera API, used by the SDK, the worker and the CLI.
 * Retries with exponential backoff (capped at 5 s, with jitter) while the server is unreachable.
 */
export class ApiClient {
  readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly tokenProvider: (() => Promise<string | undefined>) | undefined;
  private readonly retryForMs: number;
  private readonly timeoutMs: number;
  private readonly onRetry: ApiClientOptions['onRetry'];

  constructor(options: ApiClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.token = options.token;
    this.tokenProvider = options.tokenProvider;
    this.retryForMs = options.retryForMs ?? 0;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.onRetry = options.onRetry;
  }

  /** A copy of this client with another bearer token. */
  withToken(token: string | undefined): ApiClient {
    return new ApiClient({
      baseUrl: this.baseUrl,
      token,
      retryForMs: this.retryForMs,
      timeoutMs: this.timeoutMs,
      ...(this.onRetry ? { onRetry: this.onRetry } : {}),
    });
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    const token = this.tokenProvider ? await this.tokenProvider() : this.token;
    if (token) headers.authorization = `Bearer ${token}`;
    const retryFor = options.retryForMs ?? this.retryForMs;
    const deadline = Date.now() + retryFor;
    for (let attempt = 1; ; attempt++) {
      let lastError: Error;
      try {
        const signal = options.signal
          ? AbortSignal.any([options.signal, AbortSignal.timeout(options.timeoutMs ?? this.timeoutMs)])
          : AbortSignal.timeout(options.timeoutMs ?? this.timeoutMs);
        const res = await fetch(url, {
          method,
          headers,
          signal,
          ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        });
        const text = await res.text();
        const body = text ? safeJson(text) : undefined;
        if (res.ok) return body as T;
        const err = errorFromApiBody(res.status, body);
        if (!RETRY_STATUS.has(res.status)) throw err;
        lastError = err;
      } catch (e) {
        if (e instanceof TesseraError && !RETRY_STATUS.has(e.status)) throw e;
        if (options.signal?.aborted) throw e;
        lastError =
          e instanceof TesseraError
            ? e
            : new TesseraError(
                'ERR_SERVER_UNREACHABLE',
                `cannot reach the Tessera server at ${this.baseUrl} (${describeFetchError(e)}); is it running? Start one with \`tessera server start\` or \`tessera dev\`, or set TESSERA_API_URL`,
                { cause: e },
              );
      }
      const delay = Math.min(5000, 100 * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
      if (Date.now() + delay > deadline) throw lastError;
      this.onRetry?.({ attempt, delayMs: delay, error: lastError });
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  // work pools
  createWorkPool(body: CreateWorkPoolRequest): Promise<WorkPool> {
    return this.request('POST', '/api/work-pools', { body });
  }
  listWorkPools(): Promise<Page<WorkPool>> {
    return this.request('GET', '/api/work-pools');
  }
  getWorkPool(name: string): Promise<WorkPool> {
    return this.request('GET', `/api/work-pools/${enc(name)}`);
  }
  updateWorkPool(name: string, body: UpdateWorkPoolRequest): Promise<WorkPool> {
    return this.request('PATCH', `/api/work-pools/${enc(name)}`, { body });
  }
  createWorkQueue(pool: string, body: CreateWorkQueueRequest): Promise<WorkQueue> {
    return this.request('POST', `/api/work-pools/${enc(pool)}/queues`, { body });
  }

  // flows and deployments
  listFlows(): Promise<Page<Flow>> {
    return this.request('GET', '/api/flows');
  }
  putDeployment(spec: DeploymentSpec): Promise<Deployment> {
    return this.request('PUT', `/api/deployments/${enc(spec.name)}`, { body: spec });
  }
  listDeployments(): Promise<Page<Deployment>> {
    return this.request('GET', '/api/deployments');
  }
  getDeployment(name: string): Promise<Deployment> {
    return this.request('GET', `/api/deployments/${enc(name)}`);
  }
  deleteDeployment(name: string): Promise<void> {
    return this.request('DELETE', `/api/deployments/${enc(name)}`);
  }
  runDeployment(name: string, body: CreateRunRequest = {}): Promise<FlowRun> {
    return this.request('POST', `/api/deployments/${enc(name)}/runs`, { body });
  }

  // flow runs
  createAdhocRun(body: CreateAdhocRunRequest): Promise<AdhocRunResponse> {
    return this.request('POST', '/api/flow-runs', { body });
  }
  listFlowRuns(query: { state?: string; deployment?: string; limit?: number } = {}): Promise<Page<FlowRun>> {
    return this.request('GET', '/api/flow-runs', { query });
  }
  /** Accepts a full id or an unambiguous prefix. */
  getFlowRun(idOrPrefix: string): Promise<FlowRun> {
    return this.request('GET', `/api/flow-runs/${enc(idOrPrefix)}`);
  }
  getFlowRunStates(id: string): Promise<Page<StateHistoryEntry>> {
    return this.request('GET', `/api/flow-runs/${enc(id)}/states`);
  }
  proposeState(id: string, body: ProposeStateRequest): Promise<ProposeStateResponse> {
    return this.request('POST', `/api/flow-runs/${enc(id)}/state`, { body });
  }
  cancelFlowRun(id: string): Promise<FlowRun> {
    return this.request('POST', `/api/flow-runs/${enc(id)}/cancel`, { body: {} });
  }
  listTaskRuns(flowRunId: string): Promise<Page<TaskRun>> {
    return this.request('GET', `/api/flow-runs/${enc(flowRunId)}/task-runs`);
  }
  getLogs(flowRunId: string, query: { afterId?: number; limit?: number } = {}): Promise<Page<LogEntry>> {
    return this.request('GET', `/api/flow-runs/${enc(flowRunId)}/logs`, { query });
  }
  sendLogs(entries: LogEntry[]): Promise<{ accepted: number }> {
    return this.request('POST', '/api/logs', { body: { entries } });
  }
  sendTaskRunEvents(events: TaskRunEvent[]): Promise<{ accepted: number }> {
    return this.request('POST', '/api/task-runs/events', { body: { events } });
  }

  // workers
  poll(pool: string, body: WorkerPollRequest, signal?: AbortSignal): Promise<WorkerPollResponse> {
    return this.request('POST', `/api/work-pools/${enc(pool)}/workers/poll`, {
      body,
      timeoutMs: (body.waitMs ?? 10_000) + 15_000,
      ...(signal ? { signal } : {}),
    });
  }
  listWorkers(): Promise<Page<Worker>> {
    return this.request('GET', '/api/workers');
  }

  // identity
  issueIdentityToken(body: IdentityTokenRequest): Promise<IdentityTokenResponse> {
    return this.request('POST', '/api/identity/token', { body });
  }

  // run identity: templates, DPoP, introspection, revocation (docs/identity.md)
  /**
   * Asks for a DPoP-bound token (`cnf.jkt`): `proof` is a DPoP proof JWT for
   * `POST <baseUrl>/api/identity/token`. Not retried: a proof is single-use.
   * @see RFC 9449 §5
   */
  issueDpopIdentityToken(body: IdentityTokenRequest, proof: string): Promise<IssuedIdentityToken> {
    return this.request('POST', '/api/identity/token', { body, headers: { dpop: proof }, retryForMs: 0 });
  }
  /** RFC 7662 introspection: `{ active: false }` unless the token is valid and its run alive and unrevoked. */
  introspectToken(token: string): Promise<IntrospectionResponse> {
    return this.request('POST', '/api/identity/introspect', { body: { token } });
  }
  /** Revokes a run's identity: its tokens turn inactive and it gets no more (`ERR_IDENTITY_REVOKED`). */
  revokeRunIdentity(runId: string, body: RevokeRunIdentityRequest = {}): Promise<RevokeRunIdentityResponse> {
    return this.request('POST', `/api/flow-runs/${enc(runId)}/revoke-identity`, { body });
  }
  /** The token a run would get now for `audience`, unsigned, built by the issuer (nothing is issued or recorded). */
  previewIdentityToken(runId: string, body: IdentityTokenPreviewRequest): Promise<IdentityTokenPreview> {
    return this.request('POST', `/api/flow-runs/${enc(runId)}/identity-preview`, { body });
  }
  /** The workspace's `sub` template. */
  getWorkspaceIdentity(workspace = 'default'): Promise<WorkspaceIdentitySettings> {
    return this.request('GET', `/api/workspaces/${enc(workspace)}/identity`);
  }
  /** Sets (or with `subTemplate: null` resets) the workspace's `sub` template. */
  putWorkspaceIdentity(body: PutWorkspaceIdentityRequest, workspace = 'default'): Promise<WorkspaceIdentitySettings> {
    return this.request('PUT', `/api/workspaces/${enc(workspace)}/identity`, { body });
  }

  // signing keys (docs/keys.md)
  /** Lists the issuer's signing keys with their states and the rotation settings. */
  listSigningKeys(): Promise<ListSigningKeysResponse> {
    return this.request('GET', '/api/keys');
  }
  /** Rotates the signing keys now; `revokeCurrent` removes the current keys from the JWKS at once. */
  rotateSigningKeys(body: RotateSigningKeysRequest = {}): Promise<RotateSigningKeysResponse> {
    return this.request('POST', '/api/keys/rotate', { body });
  }
  /** The discovery document and JWKS to serve from a static site standing in for `issuer`. */
  getKeyPublication(query: { issuer?: string; cacheMaxAge?: string } = {}): Promise<KeyPublication> {
    return this.request('GET', '/api/keys/publication', { query });
  }
}

/** Creates an {@link ApiClient}. */
export function createApiClient(options: ApiClientOptions): ApiClient {
  return new ApiClient(options);
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.slice(0, 500) };
  }
}

function describeFetchError(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: { code?: string } }).cause;
    if (cause?.code) return cause.code;
    if (e.name === 'TimeoutError') return 'timed out';
    return e.message;
  }
  return String(e);
}

export type { ClaimedRun };
