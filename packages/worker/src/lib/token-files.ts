/**
 * Token files for cloud SDKs: the worker asks the server for the run's identity tokens, writes them
 * where AWS, Google and Azure SDKs look for them, and keeps them fresh while the run lives.
 *
 * The layout follows Kubernetes projected service-account tokens (what those SDKs were built for):
 * one file per audience, replaced atomically, with a new token in place before 80% of its lifetime.
 */
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  formatDuration,
  type IdentityTokenRequest,
  type IdentityTokenResponse,
  TesseraError,
  type TokenFileCloud,
  type TokenFilesSpec,
  tokenFileAudiences,
} from '@tessera/core';
import type { WorkerLogger } from '../options.js';
import { backoffDelay, sleep } from './backoff.js';
import { isRetryable } from './retry.js';

/**
 * Refresh when this fraction of a token's lifetime has passed since it was asked for: early enough that
 * the new token is in the file before 80% (the kubelet's mark), however slowly the server answers.
 */
export const REFRESH_AT = 0.75;
/** Google's STS, where an `external_account` credential exchanges the subject token by default. */
export const DEFAULT_GCP_TOKEN_URL = 'https://sts.googleapis.com/v1/token';
/** The `subject_token_type` of a JWT from an OIDC issuer (RFC 8693 §3). */
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

/** File names inside the per-run directory. */
const FILE_NAMES: Record<TokenFileCloud, string> = {
  aws: 'aws-web-identity-token',
  gcp: 'gcp-subject-token',
  azure: 'azure-federated-token',
};
const GCP_CREDENTIALS_FILE = 'gcp-credentials.json';
const CLOUD_NAMES: Record<TokenFileCloud, string> = { aws: 'AWS', gcp: 'GCP', azure: 'Azure' };

/**
 * Static credentials that SDKs prefer over a web-identity token file. When the worker's own
 * environment carries them, a run would silently act as the worker instead of as itself, so they
 * are not passed on to a run that has token files for that cloud.
 */
const SHADOWING: Record<TokenFileCloud, readonly string[]> = {
  aws: ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE'],
  gcp: [],
  azure: ['AZURE_CLIENT_SECRET', 'AZURE_CLIENT_CERTIFICATE_PATH', 'AZURE_CLIENT_CERTIFICATE_PASSWORD', 'AZURE_USERNAME', 'AZURE_PASSWORD'],
};

/** One token file to keep filled. */
export interface PlannedTokenFile {
  cloud: TokenFileCloud;
  /** The deployment field it comes from, for messages: `identity.tokenFiles.aws`. */
  field: string;
  audience: string;
  /** Requested lifetime, ms; the server's default (5 minutes) when unset. */
  lifetimeMs: number | undefined;
  path: string;
}

/** What {@link planTokenFiles} decides for a run, before any token is fetched. */
export interface TokenFilesPlan {
  files: PlannedTokenFile[];
  /** Variables the flow process gets. */
  env: Record<string, string>;
  /** Files written once (the Google credential configuration). */
  staticFiles: { path: string; content: string }[];
  /** Inherited variables removed from the flow process's environment (see {@link SHADOWING}). */
  shadowed: string[];
}

/**
 * Decides the files and variables for a token-files spec, checking its shape: it comes from the
 * network. Pure: writes nothing.
 * @throws TesseraError `ERR_VALIDATION` naming the malformed field.
 */
export function planTokenFiles(spec: unknown, dir: string, runId: string): TokenFilesPlan {
  const checked = checkSpec(spec);
  const plan: TokenFilesPlan = { files: [], env: {}, staticFiles: [], shadowed: [] };
  for (const { cloud, audience } of tokenFileAudiences(checked)) {
    const path = join(dir, FILE_NAMES[cloud]);
    plan.files.push({ cloud, field: `identity.tokenFiles.${cloud}`, audience, lifetimeMs: checked[cloud]?.lifetimeMs, path });
    plan.shadowed.push(...SHADOWING[cloud]);
  }
  const { aws, gcp, azure } = checked;
  if (aws) {
    plan.env.AWS_WEB_IDENTITY_TOKEN_FILE = join(dir, FILE_NAMES.aws);
    plan.env.AWS_ROLE_ARN = aws.roleArn;
    plan.env.AWS_ROLE_SESSION_NAME = runId;
  }
  if (gcp) {
    const credentials = join(dir, GCP_CREDENTIALS_FILE);
    const config = {
      type: 'external_account',
      audience: gcp.audience,
      subject_token_type: JWT_TOKEN_TYPE,
      token_url: gcp.tokenUrl ?? DEFAULT_GCP_TOKEN_URL,
      credential_source: { file: join(dir, FILE_NAMES.gcp), format: { type: 'text' } },
      ...(gcp.serviceAccountImpersonationUrl ? { service_account_impersonation_url: gcp.serviceAccountImpersonationUrl } : {}),
    };
    plan.staticFiles.push({ path: credentials, content: `${JSON.stringify(config, null, 2)}\n` });
    plan.env.GOOGLE_APPLICATION_CREDENTIALS = credentials;
    // gcloud reads its own variable; with it, `gcloud` and `gsutil` in a shell step use the run's identity too.
    plan.env.CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE = credentials;
  }
  if (azure) {
    plan.env.AZURE_FEDERATED_TOKEN_FILE = join(dir, FILE_NAMES.azure);
    plan.env.AZURE_CLIENT_ID = azure.clientId;
    plan.env.AZURE_TENANT_ID = azure.tenantId;
  }
  return plan;
}

function checkSpec(spec: unknown): TokenFilesSpec {
  const bad = (field: string, expected: string) =>
    new TesseraError('ERR_VALIDATION', `identity.tokenFiles${field}: expected ${expected}; redeploy the deployment`, {
      details: { field: `identity.tokenFiles${field}` },
    });
  if (typeof spec !== 'object' || spec === null) throw bad('', 'a mapping with aws, gcp and/or azure');
  const s = spec as Record<string, Record<string, unknown> | undefined>;
  const str = (cloud: string, key: string, required: boolean) => {
    if (s[cloud] === undefined) return;
    const v = s[cloud][key];
    if (v === undefined && !required) return;
    if (typeof v !== 'string' || v === '') throw bad(`.${cloud}.${key}`, 'a non-empty string');
  };
  for (const cloud of ['aws', 'gcp', 'azure'] as const) {
    const c = s[cloud];
    if (c === undefined) continue;
    if (typeof c !== 'object' || c === null) throw bad(`.${cloud}`, 'a mapping');
    const lifetime = c.lifetimeMs;
    if (lifetime !== undefined && (typeof lifetime !== 'number' || !Number.isFinite(lifetime) || lifetime <= 0)) {
      throw bad(`.${cloud}.lifetimeMs`, 'a positive number of milliseconds');
    }
  }
  str('aws', 'roleArn', true);
  str('aws', 'audience', false);
  str('gcp', 'audience', true);
  str('gcp', 'tokenUrl', false);
  str('gcp', 'serviceAccountImpersonationUrl', false);
  str('azure', 'clientId', true);
  str('azure', 'tenantId', true);
  str('azure', 'audience', false);
  return spec as TokenFilesSpec;
}

/** Options for {@link projectTokenFiles}. */
export interface ProjectTokenFilesOptions {
  /** The claim's `tokenFiles` (untrusted: checked here). */
  spec: unknown;
  runId: string;
  /** Directory in which the run's own directory is created. */
  baseDir: string;
  /** Asks the server for a token with the run's credential (`ApiClient.issueIdentityToken`). */
  issue: (request: IdentityTokenRequest) => Promise<IdentityTokenResponse>;
  logger: WorkerLogger;
  /** Prefix of log lines: `run 7f3c1a2b`. */
  label: string;
  /** How long to keep asking for the first tokens while the server is unreachable, ms. */
  retryForMs: number;
  /** Abandons the first fetch (the run was cancelled or forgotten before it started). */
  signal?: AbortSignal;
}

/** A run's projected token files, kept fresh until {@link ProjectedTokenFiles.close}. */
export interface ProjectedTokenFiles {
  /** The per-run directory (mode 0700). */
  readonly dir: string;
  /** Variables to give the flow process. */
  readonly env: Readonly<Record<string, string>>;
  /** Inherited variables to keep from the flow process (static credentials that would win over the files). */
  readonly shadowed: readonly string[];
  /** Stops refreshing and removes the directory. Idempotent; never rejects. */
  close(): Promise<void>;
}

/**
 * Creates the run's token directory, fetches every token (the run does not start without them),
 * writes the files atomically with mode 0600, and refreshes each at 75% of its lifetime (counted
 * from the request), so a new token is in place before 80% has passed, as the kubelet promises.
 *
 * A refresh that fails is logged and retried with backoff; the run goes on with the current token
 * (an SDK only reads the file when it needs new cloud credentials). Token contents are never logged:
 * only the audience, the `jti` and the expiry.
 *
 * @throws TesseraError naming the cloud, its deployment field and the server's reason when a first token cannot be had;
 *   the directory is removed first.
 */
export async function projectTokenFiles(options: ProjectTokenFilesOptions): Promise<ProjectedTokenFiles> {
  await mkdir(options.baseDir, { recursive: true, mode: 0o700 });
  // The name carries the worker's pid, for the sweep of a later worker should this one be killed.
  const dir = await mkdtemp(join(options.baseDir, `${RUN_DIR_PREFIX}${options.runId.slice(0, 8)}-${process.pid}-`));
  const projector = new Projector(options, dir);
  try {
    await chmod(dir, 0o700);
    await projector.start();
  } catch (e) {
    await projector.close();
    throw e;
  }
  return projector;
}

/** Run directories are named `tessera-run-<run id prefix>-<worker pid>-<random>`. */
const RUN_DIR_PREFIX = 'tessera-run-';
const RUN_DIR_NAME = /^tessera-run-([0-9a-z]{1,8})-(\d+)-[0-9A-Za-z]{6}$/;

/** Whether a process with this pid exists (on this machine; EPERM means it does, under another user). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the run directories in `baseDir` that a worker which no longer exists left behind: a worker
 * killed with SIGKILL cannot remove its runs' directories, and the tokens in them stay valid until
 * they expire. A directory is removed only when it is ours (this user's, a real directory, not a
 * link) and the worker process its name carries is gone; a live worker's directories (this one's or
 * another's sharing the base directory) and anything else are left alone. Never throws; returns how
 * many it removed.
 */
export async function sweepTokenDirs(baseDir: string, logger: WorkerLogger): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(baseDir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of entries) {
    const m = RUN_DIR_NAME.exec(name);
    if (!m) continue;
    const pid = Number(m[2]);
    if (pid <= 0 || pid === process.pid || processExists(pid)) continue;
    const dir = join(baseDir, name);
    try {
      const st = await lstat(dir);
      if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid())) continue;
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      removed++;
      logger.info(`removed the token files of run ${m[1]}, left behind by worker process ${pid}, which is gone`);
    } catch {
      // Gone meanwhile, or not removable: leave it.
    }
  }
  return removed;
}

/** What the worker knows of the token currently in a file. */
interface Current {
  jti: string;
  /** Local time after which the token is surely expired (measured from when it was asked for). */
  expiresAt: number;
  lifetimeMs: number;
  /** An error was logged because the token expired while refreshes kept failing. */
  expiryReported?: boolean;
}

class Projector implements ProjectedTokenFiles {
  readonly env: Readonly<Record<string, string>>;
  readonly shadowed: readonly string[];
  private readonly plan: TokenFilesPlan;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly current = new Map<TokenFileCloud, Current>();
  private readonly stopped = new AbortController();
  /** Writes in progress: `close()` waits for them so nothing lands in a directory being removed. */
  private readonly writes = new Set<Promise<void>>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly options: ProjectTokenFilesOptions,
    readonly dir: string,
  ) {
    this.plan = planTokenFiles(options.spec, dir, options.runId);
    this.env = Object.freeze({ ...this.plan.env });
    this.shadowed = Object.freeze([...this.plan.shadowed]);
  }

  async start(): Promise<void> {
    for (const file of this.plan.staticFiles) await this.write(file.path, file.content);
    const aborted = new Promise<never>((_, reject) => {
      const signal = AbortSignal.any([this.stopped.signal, ...(this.options.signal ? [this.options.signal] : [])]);
      const stop = () => reject(new TesseraError('ERR_CANCELLED', 'token files were abandoned before the run started'));
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
    });
    aborted.catch(() => {});
    await Promise.race([Promise.all(this.plan.files.map((file) => this.first(file))), aborted]);
    const what = this.plan.files.map((f) => {
      const c = this.current.get(f.cloud);
      return `${CLOUD_NAMES[f.cloud]} (aud ${f.audience}, jti ${c?.jti}, refreshed every ${formatDuration((c?.lifetimeMs ?? 0) * REFRESH_AT)})`;
    });
    this.options.logger.info(`${this.options.label}: token files ready in ${this.dir}: ${what.join(', ')}`);
  }

  /** The first token of a file: retried while the server is unreachable, refused with the server's reason otherwise. */
  private async first(file: PlannedTokenFile): Promise<void> {
    const deadline = Date.now() + this.options.retryForMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.fetchAndWrite(file);
        return;
      } catch (e) {
        const delayMs = backoffDelay(attempt, 2000);
        if (!isRetryable(e) || Date.now() + delayMs > deadline || this.isStopped()) {
          const reason = e instanceof Error ? e.message : String(e);
          throw new TesseraError(
            e instanceof TesseraError ? e.code : 'ERR_INTERNAL',
            `cannot get the ${CLOUD_NAMES[file.cloud]} token file's first token (${file.field}, audience "${file.audience}"): ${reason}`,
            { cause: e, details: { field: file.field } },
          );
        }
        await sleep(delayMs, this.abortSignal());
      }
    }
  }

  /** Asks for a token and swaps it into the file. Never leaves a half-written file. */
  private async fetchAndWrite(file: PlannedTokenFile): Promise<void> {
    const askedAt = Date.now();
    const answer = await this.options.issue({
      audience: file.audience,
      ...(file.lifetimeMs !== undefined ? { lifetime: file.lifetimeMs } : {}),
    });
    if (this.isStopped()) return;
    if (typeof answer?.token !== 'string' || answer.token === '') throw new TesseraError('ERR_HTTP', 'the server answered without a token');
    await this.write(file.path, answer.token);
    const lifetimeMs = grantedLifetimeMs(answer, askedAt);
    this.current.set(file.cloud, { jti: answer.jti, expiresAt: askedAt + lifetimeMs, lifetimeMs });
    // Counted from the request, not from now: a slow answer must not push the refresh past 80%.
    this.schedule(file, Math.max(500, askedAt + lifetimeMs * REFRESH_AT - Date.now()), 0);
  }

  private schedule(file: PlannedTokenFile, delayMs: number, failures: number): void {
    if (this.isStopped()) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void this.refresh(file, failures);
    }, delayMs);
    timer.unref();
    this.timers.add(timer);
  }

  private async refresh(file: PlannedTokenFile, failures: number): Promise<void> {
    if (this.isStopped()) return;
    const name = CLOUD_NAMES[file.cloud];
    const log = this.options.logger;
    try {
      await this.fetchAndWrite(file);
      if (failures > 0 && !this.isStopped())
        log.info(`${this.options.label}: ${name} token file refreshed again after ${failures} failure(s)`);
    } catch (e) {
      if (this.isStopped()) return;
      const reason = e instanceof Error ? e.message : String(e);
      if (e instanceof TesseraError && e.code === 'ERR_CREDENTIAL_REVOKED') {
        // The run has ended (its credential died with it); the worker removes the files as the process exits.
        log.info(`${this.options.label}: ${name} token file no longer refreshed: the run has ended`);
        return;
      }
      const current = this.current.get(file.cloud);
      const leftMs = (current?.expiresAt ?? 0) - Date.now();
      const attempt = failures + 1;
      if (leftMs > 0) {
        if (failures === 0) {
          log.warn(
            `${this.options.label}: cannot refresh the ${name} token file (aud ${file.audience}): ${reason}; retrying, the current token (jti ${current?.jti}) is valid for ${formatDuration(leftMs)}`,
          );
        }
        this.schedule(file, Math.max(100, Math.min(backoffDelay(attempt, 10_000), leftMs / 2)), attempt);
      } else {
        if (current && !current.expiryReported) {
          current.expiryReported = true;
          log.error(
            `${this.options.label}: the ${name} token file (aud ${file.audience}) holds an expired token and cannot be refreshed: ${reason}; still retrying`,
          );
        }
        this.schedule(file, backoffDelay(attempt, 30_000), attempt);
      }
    }
  }

  /** Write to a temporary file, then rename: a reader sees the old token or the new one, never a part. */
  private write(path: string, content: string): Promise<void> {
    if (this.isStopped()) return Promise.resolve();
    const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    const done = (async () => {
      try {
        await writeFile(tmp, content, { mode: 0o600, flag: 'wx' });
        await rename(tmp, path);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
    })();
    const tracked = done.catch(() => {});
    this.writes.add(tracked);
    void tracked.finally(() => this.writes.delete(tracked));
    return done;
  }

  private isStopped(): boolean {
    return this.stopped.signal.aborted;
  }

  private abortSignal(): AbortSignal {
    return this.options.signal ? AbortSignal.any([this.stopped.signal, this.options.signal]) : this.stopped.signal;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopped.abort();
      for (const timer of this.timers) clearTimeout(timer);
      this.timers.clear();
      await Promise.all(this.writes);
      try {
        await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
      } catch (e) {
        this.options.logger.error(`${this.options.label}: cannot remove its token directory ${this.dir}: ${(e as Error).message}`);
      }
    })();
    return this.closing;
  }
}

/**
 * How long a token lives, ms: `exp - iat` from its payload (the server's clock on both ends, so
 * skew between worker and server does not matter), else `expiresAt` against the time it was asked for.
 */
function grantedLifetimeMs(answer: IdentityTokenResponse, askedAt: number): number {
  try {
    const payload = JSON.parse(Buffer.from(answer.token.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
      exp?: unknown;
      iat?: unknown;
    };
    if (typeof payload.exp === 'number' && typeof payload.iat === 'number' && payload.exp > payload.iat) {
      return (payload.exp - payload.iat) * 1000;
    }
  } catch {
    // not a JWT we can read: fall back to expiresAt
  }
  const fromExpiry = Date.parse(answer.expiresAt) - askedAt;
  return Number.isFinite(fromExpiry) && fromExpiry > 0 ? fromExpiry : 60_000;
}
