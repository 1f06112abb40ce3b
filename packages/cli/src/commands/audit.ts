import type { AuditEvent } from '@tessera/core';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { examples, parseIntOption } from '../lib/options.js';
import type { Style } from '../lib/style.js';
import { renderTable } from '../lib/table.js';
import { formatTime, zoneName } from '../lib/time.js';

/** The `audit` table. */
export function formatAuditEvents(items: readonly AuditEvent[], options: { style: Style; timeZone: string; now: Date }): string {
  const { style, timeZone } = options;
  if (items.length === 0) return style.dim('no security events');
  const paint = (r: AuditEvent['result']) => (r === 'success' ? style.green(r) : r === 'denied' ? style.yellow(r) : style.red(r));
  return renderTable(
    [`TIME (${zoneName(timeZone, options.now)})`, 'ACTION', 'RESULT', 'PRINCIPAL', 'TARGET', 'DETAIL'],
    items.map((e) => [
      formatTime(e.at, timeZone, { date: true }),
      e.action,
      paint(e.result),
      e.principal,
      e.target ?? style.dim('—'),
      e.detail ? String(e.detail.reason ?? e.detail.code ?? JSON.stringify(e.detail)) : '',
    ]),
    style,
  );
}

/** `tessera audit`: security events (admin). */
export function registerAuditCommand(program: Command, ctx: () => CliContext): void {
  program
    .command('audit')
    .description('security events: logins, token exchanges, denials, workers joined and revoked, trust policy changes (admin)')
    .option('--action <action>', 'only this action, e.g. token.exchange, authz.denied, worker.revoked')
    .option('--principal <kind:id>', 'only events by this principal')
    .option('--limit <n>', 'the newest n events', parseIntOption('--limit', 1, 1000), 100)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      examples(
        ['tessera audit'],
        ['tessera audit --action token.exchange --limit 20'],
        ['tessera audit --json | jq ".[] | select(.result != \\"success\\")"'],
      ),
    )
    .action(async (opts: { action?: string; principal?: string; limit: number; json?: boolean }) => {
      const c = ctx();
      const { items } = await c.client().request<{ items: AuditEvent[] }>('GET', '/api/audit', {
        query: { limit: opts.limit, action: opts.action, principal: opts.principal },
      });
      if (opts.json) return c.json(items);
      c.out(formatAuditEvents(items, { style: c.style, timeZone: c.timeZone, now: new Date() }));
    });
}
