import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  type CreateJoinTokenResponse,
  JOIN_TOKEN_PREFIX,
  type JoinWorkerRequest,
  type JoinWorkerResponse,
  type StateCause,
  TesseraError,
  type TrustPolicy,
  ValidationError,
  type WorkerIdentity,
} from '@tessera/core';
import { calculateJwkThumbprint, importJWK, type JWK } from 'jose';
import type { Principal } from '../auth/principal.js';
import { iso } from '../lib/clock.js';
import { fromJson, toJson } from '../lib/json.js';
import type { WorkerIdentityTable } from '../store/schema-auth.js';
import type { AuditService } from './audit.js';
import type { ServiceContext } from './context.js';

/** Default lifetime of a join token, ms (10 minutes). */
export const DEFAULT_JOIN_TOKEN_TTL_MS = 10 * 60_000;
/** Longest a join token may live, ms (1 hour). */
export const MAX_JOIN_TOKEN_TTL_MS = 60 * 60_000;

/** Key types a worker may register: asymmetric only (a shared secret would be a long-lived secret again). */
const KEY_TYPES: Record<string, string[]> = { EC: ['P-256', 'P-384', 'P-521'], OKP: ['Ed25519'], RSA: [] };

type AuditPrincipal = Principal | string | null;

function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/**
 * Workers' identities. A worker joins without a long-lived shared secret, in one of two ways:
 * - a **join token**: single use, expires within minutes (stored only as a SHA-256 hash); the
 *   worker presents it once with the public half of a key pair it generated, and from then on proves
 *   possession of the private half (RFC 7523 assertions at /oauth/token) to get short-lived access tokens;
 * - **federation**: a platform token (a Kubernetes projected service-account token…) exchanged under
 *   a trust policy with role `worker`; each distinct external `sub` is one worker identity.
 * Either way an admin can list workers and revoke one; a revoked worker is refused at once.
 */
export class WorkerIdentityService {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly audit: AuditService,
  ) {}

  /** Issues a single-use join token. The token is returned once; only its hash is stored. */
  async createJoinToken(
    options: { pool?: string | undefined; name?: string | undefined; ttlMs?: number | undefined },
    actor: StateCause,
    auditPrincipal: AuditPrincipal,
  ): Promise<CreateJoinTokenResponse> {
    const ttlMs = options.ttlMs ?? DEFAULT_JOIN_TOKEN_TTL_MS;
    if (!(ttlMs > 0 && ttlMs <= MAX_JOIN_TOKEN_TTL_MS)) {
      throw new ValidationError(`ttl: ${ttlMs} ms is out of range; a join token lives at most 1 h (default 10m)`, [
        { path: 'ttl', message: 'between 1 ms and 1 h' },
      ]);
    }
    if (options.pool) {
      const pool = await this.ctx.db.selectFrom('work_pools').select('id').where('name', '=', options.pool).executeTakeFirst();
      if (!pool)
        throw new TesseraError(
          'ERR_UNKNOWN_POOL',
          `no work pool "${options.pool}": create it first (tessera pools create ${options.pool})`,
        );
    }
    const now = this.ctx.clock.now();
    const token = JOIN_TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const id = `jt_${randomUUID().slice(0, 8)}`;
    const expiresAt = iso(now + ttlMs);
    await this.ctx.db
      .insertInto('join_tokens')
      .values({
        id,
        hash: hashToken(token),
        pool: options.pool ?? null,
        name: options.name ?? null,
        created_at: iso(now),
        created_by: toJson(actor),
        expires_at: expiresAt,
        used_at: null,
        worker_id: null,
      })
      .execute();
    await this.audit.record({
      principal: auditPrincipal,
      action: 'worker.join_token_created',
      target: `join-token:${id}`,
      result: 'success',
      detail: { pool: options.pool ?? null, expiresAt },
    });
    return { id, token, pool: options.pool ?? null, expiresAt };
  }

  /**
   * A worker joins: spends the join token (once) and registers its public key.
   * @throws TesseraError `ERR_JOIN_TOKEN_INVALID` (never issued), `ERR_JOIN_TOKEN_EXPIRED`,
   *   `ERR_JOIN_TOKEN_USED` (a replay), `ERR_VALIDATION` for a key that is not an asymmetric public key.
   */
  async join(req: JoinWorkerRequest, tokenEndpoint: string, client: { ip: string }): Promise<JoinWorkerResponse> {
    const now = this.ctx.clock.now();
    const row = await this.ctx.db.selectFrom('join_tokens').selectAll().where('hash', '=', hashToken(req.joinToken)).executeTakeFirst();
    const fail = async (code: 'ERR_JOIN_TOKEN_INVALID' | 'ERR_JOIN_TOKEN_EXPIRED' | 'ERR_JOIN_TOKEN_USED', message: string) => {
      await this.audit.record({
        principal: `worker-candidate:${req.name}`,
        action: 'worker.join_failed',
        target: row ? `join-token:${row.id}` : null,
        result: 'failure',
        detail: { code, reason: message, ip: client.ip },
      });
      return new TesseraError(code, message);
    };
    if (!row)
      throw await fail(
        'ERR_JOIN_TOKEN_INVALID',
        'the join token is not valid: it was never issued by this server. Ask an admin for one: tessera workers join-token',
      );
    if (row.used_at) {
      throw await fail(
        'ERR_JOIN_TOKEN_USED',
        `join token ${row.id} was already used at ${row.used_at}: join tokens are single-use; ask an admin for a new one`,
      );
    }
    if (Date.parse(row.expires_at) <= now) {
      throw await fail('ERR_JOIN_TOKEN_EXPIRED', `join token ${row.id} expired at ${row.expires_at}; ask an admin for a new one`);
    }
    const jwk = await checkPublicKey(req.publicKey);
    const jkt = await calculateJwkThumbprint(jwk, 'sha256');
    const workerId = `wk_${randomUUID()}`;
    const name = row.name ?? req.name;
    const spent = await this.ctx.db.transaction().execute(async (trx) => {
      // Spend it atomically: of two concurrent joins with one token, exactly one wins.
      const res = await trx
        .updateTable('join_tokens')
        .set({ used_at: iso(now), worker_id: workerId })
        .where('id', '=', row.id)
        .where('used_at', 'is', null)
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) return false;
      await trx
        .insertInto('worker_identities')
        .values({
          id: workerId,
          name,
          pool: row.pool,
          method: 'join-token',
          public_jwk: JSON.stringify(jwk),
          jkt,
          policy_id: null,
          external_subject: null,
          join_token_id: row.id,
          created_at: iso(now),
          created_by: row.created_by,
          last_seen_at: iso(now),
          revoked_at: null,
          revoked_by: null,
        })
        .execute();
      return true;
    });
    if (!spent) throw await fail('ERR_JOIN_TOKEN_USED', `join token ${row.id} was already used: join tokens are single-use`);
    await this.audit.record({
      principal: `worker:${workerId}`,
      action: 'worker.joined',
      target: `worker:${workerId}`,
      result: 'success',
      detail: { name, pool: row.pool, method: 'join-token', joinToken: row.id, jkt, ip: client.ip },
    });
    return { workerId, name, pool: row.pool, tokenEndpoint };
  }

  /**
   * The worker identity of an external subject federated under a worker trust policy, created on
   * first use.
   * @throws TesseraError `ERR_CREDENTIAL_REVOKED` when an admin revoked it.
   */
  async federated(policy: TrustPolicy, externalSubject: string): Promise<WorkerIdentityTable> {
    const now = iso(this.ctx.clock.now());
    const find = () =>
      this.ctx.db
        .selectFrom('worker_identities')
        .selectAll()
        .where('policy_id', '=', policy.id)
        .where('external_subject', '=', externalSubject)
        .executeTakeFirst();
    let row = await find();
    if (!row) {
      const id = `wk_${createHash('sha256').update(`${policy.id}\0${externalSubject}`).digest('hex').slice(0, 32)}`;
      await this.ctx.db
        .insertInto('worker_identities')
        .values({
          id,
          name: externalSubject.slice(0, 200),
          pool: policy.pool,
          method: 'federation',
          public_jwk: null,
          jkt: null,
          policy_id: policy.id,
          external_subject: externalSubject,
          join_token_id: null,
          created_at: now,
          created_by: toJson({ kind: 'machine', id: `policy:${policy.name}`, label: `trust policy ${policy.name}` }),
          last_seen_at: now,
          revoked_at: null,
          revoked_by: null,
        })
        .onConflict((oc) => oc.column('id').doNothing())
        .execute();
      row = await find();
      if (!row) throw new TesseraError('ERR_INTERNAL', 'could not record the federated worker');
      await this.audit.record({
        principal: `worker:${row.id}`,
        action: 'worker.joined',
        target: `worker:${row.id}`,
        result: 'success',
        detail: { name: row.name, pool: row.pool, method: 'federation', policy: policy.name },
      });
    }
    if (row.revoked_at) {
      throw new TesseraError(
        'ERR_CREDENTIAL_REVOKED',
        `worker "${row.name}" (${row.id}) was revoked at ${row.revoked_at}: this workload may no longer join under trust policy "${policy.name}"`,
      );
    }
    await this.touch(row.id);
    return row;
  }

  /** A joined worker, for checking its assertions. */
  async find(id: string): Promise<WorkerIdentityTable | undefined> {
    return this.ctx.db.selectFrom('worker_identities').selectAll().where('id', '=', id).executeTakeFirst();
  }

  /** Records that the worker just authenticated. */
  async touch(id: string): Promise<void> {
    await this.ctx.db
      .updateTable('worker_identities')
      .set({ last_seen_at: iso(this.ctx.clock.now()) })
      .where('id', '=', id)
      .execute();
  }

  /** Every worker identity, newest first. */
  async list(): Promise<WorkerIdentity[]> {
    const rows = await this.ctx.db
      .selectFrom('worker_identities as w')
      .leftJoin('trust_policies as p', 'p.id', 'w.policy_id')
      .selectAll('w')
      .select('p.name as policy_name')
      .orderBy('w.created_at', 'desc')
      .limit(1000)
      .execute();
    return rows.map((r) => toWorkerIdentity(r, r.policy_name ?? null));
  }

  /**
   * Revokes a worker by id (or unambiguous prefix) or name: its access tokens are refused from the
   * next request, and it can get no new ones. Idempotent.
   */
  async revoke(idOrName: string, actor: StateCause, auditPrincipal: AuditPrincipal): Promise<WorkerIdentity> {
    const row = await this.resolve(idOrName);
    if (!row.revoked_at) {
      await this.ctx.db
        .updateTable('worker_identities')
        .set({ revoked_at: iso(this.ctx.clock.now()), revoked_by: toJson(actor) })
        .where('id', '=', row.id)
        .where('revoked_at', 'is', null)
        .execute();
      await this.audit.record({
        principal: auditPrincipal,
        action: 'worker.revoked',
        target: `worker:${row.id}`,
        result: 'success',
        detail: { name: row.name },
      });
    }
    const updated = (await this.list()).find((w) => w.id === row.id);
    if (!updated) throw new TesseraError('ERR_INTERNAL', 'revoked worker vanished');
    return updated;
  }

  private async resolve(idOrName: string): Promise<WorkerIdentityTable> {
    const exact = await this.find(idOrName);
    if (exact) return exact;
    const rows = await this.ctx.db
      .selectFrom('worker_identities')
      .selectAll()
      .where((eb) => eb.or([eb('id', 'like', `${idOrName.replace(/[%_]/g, '')}%`), eb('name', '=', idOrName)]))
      .limit(5)
      .execute();
    if (rows.length === 1) return rows[0] as WorkerIdentityTable;
    if (rows.length === 0) throw new TesseraError('ERR_NOT_FOUND', `no worker "${idOrName}"; list them with: tessera workers ls`);
    throw new TesseraError(
      'ERR_CONFLICT',
      `"${idOrName}" names ${rows.length} workers (${rows.map((r) => r.id).join(', ')}); give more of the id`,
    );
  }
}

/** Checks a worker's public key: an asymmetric public JWK, never a private or symmetric one. */
async function checkPublicKey(input: unknown): Promise<JWK> {
  const bad = (message: string) => new ValidationError(`publicKey: ${message}`, [{ path: 'publicKey', message }]);
  if (!input || typeof input !== 'object' || Array.isArray(input)) throw bad('expected a public JWK object');
  const jwk = input as JWK;
  if (jwk.d !== undefined || jwk.k !== undefined || jwk.p !== undefined) {
    throw bad('this is a private or symmetric key: send only the public half; the private key never leaves the worker');
  }
  const curves = KEY_TYPES[String(jwk.kty)];
  if (!curves) throw bad(`kty ${JSON.stringify(jwk.kty)} is not accepted; use EC (P-256), OKP (Ed25519) or RSA`);
  if (curves.length > 0 && !curves.includes(String(jwk.crv)))
    throw bad(`curve ${JSON.stringify(jwk.crv)} is not accepted; use ${curves.join(', ')}`);
  if (jwk.kty === 'RSA' && (typeof jwk.n !== 'string' || Buffer.from(jwk.n, 'base64url').length < 256)) {
    throw bad('an RSA key must be at least 2048 bits');
  }
  const pub: JWK =
    jwk.kty === 'RSA'
      ? { kty: 'RSA', n: jwk.n, e: jwk.e }
      : jwk.kty === 'EC'
        ? { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y }
        : { kty: 'OKP', crv: jwk.crv, x: jwk.x };
  try {
    await importJWK(pub, algorithmFor(pub));
  } catch (e) {
    throw bad(`not a usable key (${(e as Error).message})`);
  }
  return pub;
}

/** The JWS algorithm a worker key signs with. */
export function algorithmFor(jwk: JWK): string {
  if (jwk.kty === 'OKP') return 'EdDSA';
  if (jwk.kty === 'RSA') return 'RS256';
  return jwk.crv === 'P-384' ? 'ES384' : jwk.crv === 'P-521' ? 'ES512' : 'ES256';
}

function toWorkerIdentity(r: WorkerIdentityTable, policyName: string | null): WorkerIdentity {
  return {
    id: r.id,
    name: r.name,
    pool: r.pool,
    method: r.method,
    policy: policyName,
    externalSubject: r.external_subject,
    jkt: r.jkt,
    createdAt: r.created_at,
    createdBy: fromJson<StateCause>(r.created_by, { kind: 'server', id: 'unknown' }),
    lastSeenAt: r.last_seen_at,
    revokedAt: r.revoked_at,
    revokedBy: fromJson<StateCause | null>(r.revoked_by, null),
  };
}
