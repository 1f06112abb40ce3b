import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { RUN_CREDENTIAL_PREFIX, TesseraError } from '@tessera/core';
import type { Kysely, Transaction } from 'kysely';
import { iso } from '../lib/clock.js';
import { prepared } from '../store/prepared.js';
import type { Database } from '../store/schema.js';
import type { ServiceContext } from './context.js';

type Db = Kysely<Database> | Transaction<Database>;

/** What a valid run credential proves. */
export interface RunCredentialPrincipal {
  runId: string;
  attempt: number;
  workerId: string | null;
  /** Hash of the credential (safe to log). */
  hash: string;
}

/** Every request of a run looks its credential up: built and compiled once. */
const CREDENTIAL_BY_HASH = prepared((db, p) => db.selectFrom('run_credentials').selectAll().where('hash', '=', p(0)));

/** The hash under which a credential is stored and looked up (SHA-256, hex). */
export function hashCredential(credential: string): string {
  return createHash('sha256').update(credential).digest('hex');
}

/** The columns of a stored credential that {@link principalOf} judges. */
export interface CredentialRow {
  hash: string;
  flow_run_id: string;
  attempt: number;
  worker_id: string | null;
  revoked_at: string | null;
}

/**
 * What the credential stored as `row` proves, looked up by `hash`; every way of looking a credential
 * up ends here.
 * @throws TesseraError `ERR_CREDENTIAL_INVALID` (unknown) or `ERR_CREDENTIAL_REVOKED` (run ended).
 */
export function principalOf(row: CredentialRow | undefined, hash: string): RunCredentialPrincipal {
  // Constant-time compare of the looked-up hash is belt and braces: the lookup is by hash already.
  if (!row || !timingSafeEqual(Buffer.from(row.hash, 'hex'), Buffer.from(hash, 'hex'))) {
    throw new TesseraError('ERR_CREDENTIAL_INVALID', 'the run credential is not valid: it was never issued by this server');
  }
  if (row.revoked_at) {
    throw new TesseraError(
      'ERR_CREDENTIAL_REVOKED',
      `the run credential was revoked at ${row.revoked_at}: the run's attempt ${row.attempt} has ended`,
    );
  }
  return { runId: row.flow_run_id, attempt: row.attempt, workerId: row.worker_id, hash: hash.slice(0, 12) };
}

/**
 * Run credentials: 256 random bits, given to the worker at claim time, stored only as a SHA-256
 * hash, bound to one run and attempt, and refused once revoked (at every terminal state).
 */
export class CredentialService {
  constructor(private readonly ctx: ServiceContext) {}

  /** Issues a new credential for the run's attempt. Returns the secret; only its hash is stored. */
  async issue(db: Db, runId: string, attempt: number, workerId: string | null): Promise<string> {
    const secret = RUN_CREDENTIAL_PREFIX + randomBytes(32).toString('base64url');
    await db
      .insertInto('run_credentials')
      .values({
        hash: hashCredential(secret),
        flow_run_id: runId,
        attempt,
        worker_id: workerId,
        created_at: iso(this.ctx.clock.now()),
        revoked_at: null,
      })
      .execute();
    return secret;
  }

  /** Issues credentials for several claimed attempts in one statement; returns the secrets in order. */
  async issueMany(db: Db, items: { runId: string; attempt: number; workerId: string | null }[]): Promise<string[]> {
    if (items.length === 0) return [];
    const now = iso(this.ctx.clock.now());
    const secrets = items.map(() => RUN_CREDENTIAL_PREFIX + randomBytes(32).toString('base64url'));
    await db
      .insertInto('run_credentials')
      .values(
        items.map((it, i) => ({
          hash: hashCredential(secrets[i] as string),
          flow_run_id: it.runId,
          attempt: it.attempt,
          worker_id: it.workerId,
          created_at: now,
          revoked_at: null,
        })),
      )
      .execute();
    return secrets;
  }

  /**
   * Checks a presented credential.
   * @throws TesseraError `ERR_CREDENTIAL_INVALID` (unknown) or `ERR_CREDENTIAL_REVOKED` (run ended).
   */
  async authenticate(credential: string): Promise<RunCredentialPrincipal> {
    const hash = hashCredential(credential);
    return principalOf(await CREDENTIAL_BY_HASH.first(this.ctx.db, [hash]), hash);
  }

  async revokeForRun(db: Db, runId: string): Promise<void> {
    await db
      .updateTable('run_credentials')
      .set({ revoked_at: iso(this.ctx.clock.now()) })
      .where('flow_run_id', '=', runId)
      .where('revoked_at', 'is', null)
      .execute();
  }
}
