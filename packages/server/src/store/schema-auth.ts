/** Tables of 0006-auth (issue #5). Times are ISO-8601 UTC strings, JSON is text. */
import type { Generated } from 'kysely';

/** A federation trust policy: who outside may exchange tokens for Tessera access tokens. */
export interface TrustPolicyTable {
  id: string;
  name: string;
  issuer: string;
  audience: string;
  /** Glob over `sub` (`*`, `?`), or null. */
  subject: string | null;
  /** CEL over `claims`, or null. */
  condition: string | null;
  /** A role, or `worker`. */
  role: string;
  workspace: string | null;
  pool: string | null;
  description: string | null;
  version: number;
  created_at: string;
  /** JSON StateCause. */
  created_by: string;
  updated_at: string;
  /** JSON StateCause. */
  updated_by: string;
}

/** A worker that joined (join token + key pair) or was federated. */
export interface WorkerIdentityTable {
  id: string;
  name: string;
  pool: string | null;
  method: 'join-token' | 'federation';
  /** JSON public JWK (join-token workers). */
  public_jwk: string | null;
  /** RFC 7638 thumbprint of `public_jwk`. */
  jkt: string | null;
  policy_id: string | null;
  external_subject: string | null;
  join_token_id: string | null;
  created_at: string;
  /** JSON StateCause. */
  created_by: string;
  last_seen_at: string | null;
  revoked_at: string | null;
  /** JSON StateCause. */
  revoked_by: string | null;
}

/** A single-use join token (only its hash). */
export interface JoinTokenTable {
  id: string;
  hash: string;
  pool: string | null;
  name: string | null;
  created_at: string;
  created_by: string;
  expires_at: string;
  used_at: string | null;
  worker_id: string | null;
}

/** RFC 7523 assertion ids seen, until they expire (replay). */
export interface AssertionJtiTable {
  id: string;
  expires_at: string;
}

/** One security event. */
export interface AuditEventTable {
  id: Generated<number>;
  at: string;
  principal: string;
  principal_kind: string;
  action: string;
  target: string | null;
  result: 'success' | 'failure' | 'denied';
  /** JSON object; never a token or secret. */
  detail: string | null;
}

/** The tables 0006-auth adds to {@link Database}. */
export interface AuthDatabase {
  trust_policies: TrustPolicyTable;
  worker_identities: WorkerIdentityTable;
  join_tokens: JoinTokenTable;
  assertion_jtis: AssertionJtiTable;
  audit_events: AuditEventTable;
}
