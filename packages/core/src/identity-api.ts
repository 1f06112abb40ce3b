/**
 * The REST contract of run identity beyond token issuance: workspace `sub` templates, introspection
 * (RFC 7662), revocation, DPoP-bound tokens. See docs/identity.md.
 */
import type { IdentityTokenResponse, SubTemplateKey } from './api.js';
import type { RunTokenClaims } from './claims.js';

/** The identity settings of a workspace (`GET /api/workspaces/:workspace/identity`). */
export interface WorkspaceIdentitySettings {
  workspace: string;
  /** Keys of the `sub` template (version 1) for deployments that set none themselves. */
  subTemplate: SubTemplateKey[];
  /** The template grammar version: tokens carry it as `sub_template_version`. */
  subTemplateVersion: number;
  /** True when the workspace has never set a template: `subTemplate` is the built-in default. */
  isDefault: boolean;
  /** Example `sub` for a deployment named `nightly-etl` in `prod`, to see the shape at a glance. */
  example: string;
  updatedAt: string | null;
}

/** `PUT /api/workspaces/:workspace/identity`. `subTemplate: null` goes back to the default. */
export interface PutWorkspaceIdentityRequest {
  subTemplate: SubTemplateKey[] | null;
}

/** An identity token as the token endpoint returns it; `cnf` is set when it is DPoP-bound. */
export interface IssuedIdentityToken extends IdentityTokenResponse {
  /** RFC 9449 confirmation: the thumbprint of the key whose DPoP proofs go with this token. */
  cnf?: { jkt: string };
}

/**
 * The answer of `POST /api/identity/introspect` (RFC 7662 §2.2). Anything that is not a valid token
 * of this issuer for a live, unrevoked run is `{ active: false }`, with no reason given.
 */
export type IntrospectionResponse = { active: false } | ActiveIntrospectionResponse;

/** An active token: every claim it carries, plus RFC 7662's `token_type`. */
export type ActiveIntrospectionResponse = RunTokenClaims & {
  active: true;
  /** `DPoP` for a token bound to a key (`cnf.jkt`), else `Bearer`. */
  token_type: 'Bearer' | 'DPoP';
};

/** `POST /api/flow-runs/:id/revoke-identity`. */
export interface RevokeRunIdentityRequest {
  /** Why, for the record (shown by `runs show`). */
  reason?: string;
}

/** The answer of `POST /api/flow-runs/:id/revoke-identity`. */
export interface RevokeRunIdentityResponse {
  runId: string;
  revokedAt: string;
  /** Who revoked it (`person:local admin`). */
  revokedBy: string;
  /** Tokens of the run not yet expired, now reported inactive by introspection. */
  tokensRevoked: number;
  /** True when the run's identity had been revoked before this call (the call changes nothing). */
  alreadyRevoked: boolean;
}

/** `POST /api/flow-runs/:id/identity-preview`: the token the run would get, as the token endpoint builds it. */
export interface IdentityTokenPreviewRequest {
  audience: string;
  /** As for a token: seconds or a duration (`15m`). @default 5 minutes */
  lifetime?: number | string;
  /** A task run of this run, for a task-scoped token. */
  taskRunId?: string;
  taskName?: string;
}

/**
 * The answer of `POST /api/flow-runs/:id/identity-preview`: the header and claims of the token the
 * run would get now, unsigned and unrecorded (`jti` is `(not issued)`), built by the issuer's own code.
 */
export interface IdentityTokenPreview {
  header: { alg: string; typ: 'JWT'; kid: string };
  claims: RunTokenClaims & Record<string, unknown>;
  /** The run's state: a run that has ended gets no token (its credential died with it). */
  runState: string;
  /** Whether the deployment allows the audience; when not, the token endpoint refuses (`ERR_AUDIENCE_NOT_ALLOWED`). */
  audienceAllowed: boolean;
  allowedAudiences: string[];
}
