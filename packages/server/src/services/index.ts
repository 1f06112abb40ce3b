import type { AdhocRunResponse, CreateAdhocRunRequest, StateCause } from '@tessera/core';
import { AccessTokenService } from '../auth/access-tokens.js';
import { AuthRegistry } from '../auth/principal.js';
import { RunCredentialAuthenticator } from '../auth/run-credentials.js';
import { iso } from '../lib/clock.js';
import { toFlowRun } from '../store/rows.js';
import { AuditService } from './audit.js';
import { CatalogService } from './catalog.js';
import { ClaimService } from './claims.js';
import type { ServiceContext } from './context.js';
import { CredentialService } from './credentials.js';
import { FederationService } from './federation.js';
import { IdentityLifecycleService } from './identity-lifecycle.js';
import { KeyManager } from './keys.js';
import { RunService } from './runs.js';
import { Scheduler } from './scheduler.js';
import { TaskRunService } from './task-runs.js';
import { TOKEN_ENDPOINT_PATH, TokenService } from './tokens.js';
import { TrustPolicyService } from './trust-policies.js';
import { WorkerIdentityService } from './worker-identities.js';
import { WorkspaceIdentityService } from './workspace-identity.js';
import { ZombieDetector } from './zombies.js';

/** Every service, wired once. */
export class Services {
  readonly runs: RunService;
  readonly credentials: CredentialService;
  readonly claims: ClaimService;
  readonly catalog: CatalogService;
  readonly taskRuns: TaskRunService;
  readonly scheduler: Scheduler;
  readonly zombies: ZombieDetector;
  readonly keys: KeyManager;
  readonly tokens: TokenService;
  readonly identityLifecycle: IdentityLifecycleService;
  readonly workspaceIdentity: WorkspaceIdentityService;
  /** Security events (docs/security.md). */
  readonly audit: AuditService;
  /** Tessera API access tokens (`typ: at+jwt`). */
  readonly accessTokens: AccessTokenService;
  /**
   * Who is calling: run credentials, then access tokens; login adds its session authenticator.
   * `auth.localAdmin` is local mode (see docs/security.md).
   */
  readonly auth: AuthRegistry;
  /** Federation trust policies. */
  readonly trustPolicies: TrustPolicyService;
  /** Workers' identities: join tokens, keys, revocation. */
  readonly workerIdentities: WorkerIdentityService;
  /** The OAuth token endpoint's grants (token exchange, JWT bearer). */
  readonly federation: FederationService;

  /** The address this server listens on (`http://127.0.0.1:4200`), once it listens. */
  listenUrl = '';
  /** Other base URLs clients reach this server at directly (see `ServerOptions.internalUrls`). */
  internalUrls: readonly string[] = [];

  constructor(
    readonly ctx: ServiceContext,
    readonly issuer: () => string,
  ) {
    this.runs = new RunService(ctx);
    this.credentials = new CredentialService(ctx);
    this.claims = new ClaimService(ctx, this.runs, this.credentials);
    this.catalog = new CatalogService(ctx, this.runs);
    this.taskRuns = new TaskRunService(ctx);
    this.scheduler = new Scheduler(ctx, this.runs);
    this.zombies = new ZombieDetector(ctx, this.runs);
    this.keys = new KeyManager(ctx);
    this.tokens = new TokenService(ctx, this.keys, issuer);
    this.identityLifecycle = new IdentityLifecycleService(ctx, this.keys, this.runs, issuer);
    this.workspaceIdentity = new WorkspaceIdentityService(ctx);
    this.audit = new AuditService(ctx);
    this.accessTokens = new AccessTokenService(ctx, this.keys, issuer);
    // Access tokens are signed with RS256 keys and not recorded in issued_tokens.
    this.keys.coverUnrecordedTokens('RS256', () => this.accessTokens.longestLifetimeMs());
    // The token endpoint checks the credential and reads the run in one statement (its hot path).
    const preload = { url: TOKEN_ENDPOINT_PATH, read: (credential: string) => this.tokens.authenticateWithRun(credential) };
    this.auth = new AuthRegistry([new RunCredentialAuthenticator(this.credentials, preload), this.accessTokens.authenticator()]);
    this.trustPolicies = new TrustPolicyService(ctx, this.audit);
    this.workerIdentities = new WorkerIdentityService(ctx, this.audit);
    this.federation = new FederationService(ctx, issuer, this.trustPolicies, this.workerIdentities, this.accessTokens, this.audit);
  }

  /** `tessera run`: the caller executes the run itself, so it is created already claimed (Pending, attempt 1). */
  async startAdhocRun(req: CreateAdhocRunRequest, actor: StateCause): Promise<AdhocRunResponse> {
    const flowId = await this.catalog.ensureFlow(req.flowName);
    return this.ctx.db.transaction().execute(async (trx) => {
      const { run } = await this.runs.createRun(
        {
          flowId,
          deploymentId: null,
          workPoolId: null,
          workQueue: null,
          priority: 0,
          parameters: req.parameters ?? {},
          maxRetries: 0,
          retryDelaysMs: [],
          scheduledFor: this.ctx.clock.now(),
          triggerKind: 'adhoc',
          triggeredBy: actor,
          tags: req.tags ?? [],
          idempotencyKey: null,
          initial: { type: 'PENDING' },
          attempt: 1,
        },
        trx,
      );
      await trx
        .updateTable('flow_runs')
        .set({ claimed_at: iso(this.ctx.clock.now()) })
        .where('id', '=', run.id)
        .execute();
      const credential = await this.credentials.issue(trx, run.id, 1, null);
      return { run: toFlowRun(run), credential };
    });
  }
}

export type { ServiceContext };
