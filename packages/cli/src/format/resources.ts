import type { Deployment, WorkPool } from '@tessera/core';
import type { Style } from '../lib/style.js';
import { renderTable } from '../lib/table.js';
import { formatAgo } from '../lib/time.js';
import { formatSchedule } from './states.js';

/** `tessera deployments ls`. */
export function formatDeploymentsTable(deployments: readonly Deployment[], options: { style: Style; now: Date }): string {
  const { style, now } = options;
  if (deployments.length === 0) return style.dim('no deployments yet; declare them in tessera.yaml and run `tessera deploy`');
  const rows = deployments.map((d) => [
    d.name,
    d.flowName,
    d.workQueue ? `${d.workPool}/${d.workQueue}` : d.workPool,
    d.schedules.length === 0 ? style.dim('none') : d.schedules.map(formatSchedule).join('; '),
    d.environment,
    d.identity?.audiences.length ? d.identity.audiences.join(', ') : style.dim('none'),
    formatAgo(d.updatedAt, now),
  ]);
  return renderTable(['NAME', 'FLOW', 'POOL', 'SCHEDULES', 'ENV', 'AUDIENCES', 'UPDATED'], rows, style);
}

/** `tessera pools ls`. */
export function formatPoolsTable(pools: readonly WorkPool[], options: { style: Style }): string {
  const { style } = options;
  if (pools.length === 0) return style.dim('no work pools yet; create one with `tessera pools create NAME`');
  const rows = pools.map((p) => [
    p.name,
    p.paused ? style.yellow('paused') : style.green('ready'),
    p.concurrencyLimit === null ? style.dim('unlimited') : String(p.concurrencyLimit),
    p.activeRuns === undefined ? '' : String(p.activeRuns),
    p.queues?.length ? p.queues.map((q) => q.name).join(', ') : '',
    p.description ?? '',
  ]);
  return renderTable(['NAME', 'STATUS', 'CONCURRENCY', 'ACTIVE RUNS', 'QUEUES', 'DESCRIPTION'], rows, style);
}
