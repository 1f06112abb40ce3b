/**
 * Queries built and compiled once, run many times: for the few statements on the hot paths (the
 * run-credential check, token issuance), where building a Kysely query and compiling it to SQL
 * costs more than SQLite takes to run it.
 */

import type { Compilable, CompiledQuery, Kysely, Transaction } from 'kysely';
import { directSqlite } from './dialect.js';
import type { Database } from './schema.js';

type Db = Kysely<Database> | Transaction<Database>;

/** Stands for the `i`-th argument of a {@link prepared} query where the builder takes a value. */
export type Param = <T = never>(i: number) => T;

interface Template {
  sql: string;
  query: CompiledQuery['query'];
  queryId: CompiledQuery['queryId'];
  /** For each parameter of the compiled SQL: the argument it takes (a number), or the constant the builder gave. */
  slots: ({ arg: number } | { value: unknown })[];
  args: number;
}

const SENTINEL = '\u0000tessera-param:';

/**
 * A query whose SQL is compiled once per database (SQLite and PostgreSQL differ) and then executed
 * with new arguments. `build` receives `p`: write `p(0)`, `p(1)`… wherever the query takes an
 * argument. Every argument must appear as a whole parameter value (not inside an expression that
 * Kysely would inline), which {@link PreparedQuery.execute} checks at first use.
 *
 * @example
 * const byHash = prepared((db, p) => db.selectFrom('run_credentials').selectAll().where('hash', '=', p(0)));
 * const row = await byHash.first(ctx.db, [hash]);
 */
export function prepared<R>(build: (db: Kysely<Database>, p: Param) => Compilable<R>): PreparedQuery<R> {
  return new PreparedQuery(build);
}

export class PreparedQuery<R> {
  /** By database instance: a transaction compiles afresh (its SQL is the same; it is not the hot path). */
  private readonly templates = new WeakMap<object, Template>();

  constructor(private readonly build: (db: Kysely<Database>, p: Param) => Compilable<R>) {}

  /** Runs the query with `args` in place of `p(0)`, `p(1)`…; returns every row. */
  async execute(db: Db, args: readonly unknown[]): Promise<R[]> {
    const t = this.template(db);
    if (args.length !== t.args) throw new Error(`prepared query takes ${t.args} argument(s), got ${args.length}`);
    const parameters = t.slots.map((s) => ('arg' in s ? args[s.arg] : s.value));
    const direct = directSqlite(db)?.query(t.sql, parameters);
    const rows = direct instanceof Promise ? await direct : direct;
    if (rows) return rows as R[];
    const result = await db.executeQuery<R>({ sql: t.sql, parameters, query: t.query, queryId: t.queryId });
    return result.rows;
  }

  /** Runs the query; returns its first row, if any. */
  async first(db: Db, args: readonly unknown[]): Promise<R | undefined> {
    return (await this.execute(db, args))[0];
  }

  private template(db: Db): Template {
    const known = this.templates.get(db);
    if (known) return known;
    let args = 0;
    const p: Param = (i: number) => {
      args = Math.max(args, i + 1);
      return `${SENTINEL}${i}` as never;
    };
    const compiled = this.build(db as Kysely<Database>, p).compile();
    const seen = new Set<number>();
    const slots = compiled.parameters.map((v) => {
      if (typeof v === 'string' && v.startsWith(SENTINEL)) {
        const arg = Number(v.slice(SENTINEL.length));
        seen.add(arg);
        return { arg };
      }
      return { value: v };
    });
    if (seen.size !== args || compiled.sql.includes(SENTINEL)) {
      throw new Error('prepared query: every p(i) must be a whole parameter value, used at least once');
    }
    const t: Template = { sql: compiled.sql, query: compiled.query, queryId: compiled.queryId, slots, args };
    this.templates.set(db, t);
    return t;
  }
}
