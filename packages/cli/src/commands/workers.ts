import type { CreateJoinTokenResponse, WorkerIdentity } from '@tessera/core';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { examples } from '../lib/options.js';
import type { Style } from '../lib/style.js';
import { renderTable } from '../lib/table.js';
import { formatTime, zoneName } from '../lib/time.js';

/** The `workers ls` table. */
export function formatWorkerIdentities(items: readonly WorkerIdentity[], options: { style: Style; timeZone: string; now: Date }): string {
  const { style, timeZone } = options;
  if (items.length === 0) return style.dim('no workers have joined: tessera workers join-token, then tessera worker start --join-token …');
  const zone = zoneName(timeZone, options.now);
  const t = (iso: string | null) => (iso ? formatTime(iso, timeZone, { date: true }) : style.dim('—'));
  return renderTable(
    ['ID', 'NAME', 'POOL', 'HOW', `JOINED (${zone})`, `LAST SEEN (${zone})`, 'STATUS'],
    items.map((w) => [
      w.id,
      w.name,
      w.pool ?? style.dim('any'),
      w.method === 'federation' ? `federation (${w.policy ?? '?'})` : 'join token + key',
      t(w.createdAt),
      t(w.lastSeenAt),
      w.revokedAt ? style.red(`revoked ${formatTime(w.revokedAt, timeZone, { date: true })}`) : style.green('active'),
    ]),
    style,
  );
}

/** `tessera workers …`: workers' identities — join tokens, listing, revocation (admin). */
export function registerWorkersCommands(program: Command, ctx: () => CliContext): void {
  const workers = program
    .command('workers')
    .description("workers' identities: issue a join token, list joined workers, revoke one (admin)")
    .addHelpText(
      'after',
      examples(
        ['tessera workers join-token --pool default', 'single use, expires in 10 min'],
        ['TESSERA_JOIN_TOKEN=tsj_… tessera worker start --pool default'],
        ['tessera workers ls'],
        ['tessera workers revoke wk_3f2a', 'refused at once'],
      ),
    );

  workers
    .command('join-token')
    .description('issue a single-use join token; the worker trades it once for its own key pair (it is shown once)')
    .option('--pool <name>', 'the only pool the worker may poll')
    .option('--name <name>', "the worker's name (else the one it gives)")
    .option('--ttl <duration>', 'how long the token may be used, at most 1h', '10m')
    .option('--json', 'print JSON')
    .action(async (opts: { pool?: string; name?: string; ttl: string; json?: boolean }) => {
      const c = ctx();
      const t = await c.client().request<CreateJoinTokenResponse>('POST', '/api/workers/join-tokens', {
        body: { ttl: opts.ttl, ...(opts.pool ? { pool: opts.pool } : {}), ...(opts.name ? { name: opts.name } : {}) },
      });
      if (opts.json) return c.json(t);
      // The token goes to stdout alone (for `$(…)`); the guidance to stderr.
      c.out(t.token);
      c.err(
        c.errStyle.dim(
          `join token ${t.id}: single use, expires ${formatTime(t.expiresAt, c.timeZone, { date: true })} ${zoneName(c.timeZone)}${t.pool ? `, pool ${t.pool}` : ''}`,
        ),
      );
      c.err(
        c.errStyle.dim(`  next: TESSERA_JOIN_TOKEN=<token> tessera worker start --pool ${t.pool ?? '<pool>'} --identity-file worker.json`),
      );
    });

  workers
    .command('ls')
    .alias('list')
    .description('list workers that joined or were federated, with revoked ones')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      const { items } = await c.client().request<{ items: WorkerIdentity[] }>('GET', '/api/workers/identities');
      if (opts.json) return c.json(items);
      c.out(formatWorkerIdentities(items, { style: c.style, timeZone: c.timeZone, now: new Date() }));
    });

  workers
    .command('revoke')
    .description('revoke a worker (id, id prefix or name): its access tokens are refused at once and it gets no new ones')
    .argument('<worker>')
    .option('--json', 'print JSON')
    .action(async (worker: string, opts: { json?: boolean }) => {
      const c = ctx();
      const w = await c.client().request<WorkerIdentity>('POST', `/api/workers/identities/${encodeURIComponent(worker)}/revoke`);
      if (opts.json) return c.json(w);
      c.out(`${c.style.green('✓')} revoked worker ${c.style.bold(w.name)} (${w.id})`);
    });
}
