import type { ApiClient, Deployment, DeploymentSpec } from '@tessera/core';
import { isTesseraError, type TesseraError } from '@tessera/core';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { formatSchedule, shortId } from '../format/states.js';
import { entrypointHint } from '../lib/entrypoint-hint.js';
import { EXIT, exitCodeFor, UsageError } from '../lib/exit.js';
import { FEDERATED_TOKEN_FILE_ENV, federatedClient } from '../lib/federation.js';
import { examples } from '../lib/options.js';
import { collect } from '../lib/params.js';
import { padEnd } from '../lib/style.js';
import { didYouMean } from '../lib/suggest.js';
import { registerTypeScriptLoader } from '../lib/tsx.js';
import { loadProjectFile, type ProjectDeployment, type ProjectFile } from '../project/load-project.js';
import { formatIssueLine, type LocatedIssue, locatedError } from '../project/yaml-source.js';

/** What happened to one deployment of the file. */
export interface DeployOutcome {
  name: string;
  deployment?: Deployment;
  error?: TesseraError;
  /** Where in tessera.yaml the problem is, when it is in the file. */
  issue?: LocatedIssue;
}

/** What {@link deployProject} did. */
export interface DeployResult {
  project: ProjectFile;
  outcomes: DeployOutcome[];
}

/**
 * Deploys the deployments of a tessera.yaml: validates the file, loads each entrypoint (relative
 * to the file's directory) to learn its flow name, parameter schema and retry settings, then puts
 * each deployment on the server. Entrypoint errors stop before anything is deployed; server
 * answers (unknown pool …) are reported per deployment, located in the file.
 *
 * @throws ValidationError `ERR_CONFIG` (the file) or `ERR_ENTRYPOINT` (flows that do not load), and
 *   `ERR_SERVER_UNREACHABLE`.
 */
export async function deployProject(
  client: ApiClient,
  options: { file: string; cwd: string; names?: readonly string[] },
): Promise<DeployResult> {
  const project = loadProjectFile(options.file, { cwd: options.cwd });
  const selected = selectDeployments(project, options.names);
  await registerTypeScriptLoader();
  const sdk = await import('@tessera/sdk');
  const specs: [ProjectDeployment, DeploymentSpec][] = [];
  const entrypointIssues: LocatedIssue[] = [];
  for (const d of selected) {
    try {
      const flow = await sdk.loadFlowFromEntrypoint(d.entrypoint, project.dir);
      specs.push([d, buildSpec(project, d, sdk.describeFlow(flow))]);
    } catch (e) {
      const message =
        (e instanceof Error ? e.message : String(e))
          .replace(/\s*\n\s*/g, ' ')
          .replace(/ A cycle involving require\(esm\).*?lazily loaded\./, '') + entrypointHint(d.entrypoint, project.dir);
      entrypointIssues.push(project.issue(['deployments', d.index, 'entrypoint'], message));
    }
  }
  if (entrypointIssues.length > 0) throw locatedError('ERR_ENTRYPOINT', project.displayName, entrypointIssues);

  const outcomes: DeployOutcome[] = [];
  for (const [d, spec] of specs) {
    try {
      outcomes.push({ name: d.name, deployment: await client.putDeployment(spec) });
    } catch (e) {
      if (!isTesseraError(e) || e.code === 'ERR_SERVER_UNREACHABLE') throw e;
      outcomes.push({ name: d.name, error: e, issue: locateServerError(project, d, e, client.baseUrl) });
    }
  }
  return { project, outcomes };
}

/** The deployments named with `--name`, in file order; every name must exist. */
function selectDeployments(project: ProjectFile, names: readonly string[] | undefined): ProjectDeployment[] {
  if (!names || names.length === 0) return [...project.deployments];
  const all = project.deployments.map((d) => d.name);
  for (const n of names) {
    if (!all.includes(n)) {
      const guess = didYouMean(n, all);
      throw new UsageError(
        `${project.displayName} has no deployment named ${JSON.stringify(n)}${guess ? `; did you mean "${guess}"?` : ''} (it declares: ${all.join(', ')})`,
      );
    }
  }
  return project.deployments.filter((d) => names.includes(d.name));
}

interface FlowDescriptionLike {
  name: string;
  retries: number;
  retryDelaysMs: number[];
  tags: string[];
  parameterSchema: Record<string, unknown> | null;
}

/** The spec sent to the server: the file's settings over the flow's own. */
export function buildSpec(project: Pick<ProjectFile, 'dir'>, d: ProjectDeployment, flow: FlowDescriptionLike): DeploymentSpec {
  const spec: DeploymentSpec = {
    name: d.name,
    flowName: flow.name,
    entrypoint: d.entrypoint,
    path: project.dir,
    workPool: d.workPool,
    parameters: d.parameters,
    parameterSchema: flow.parameterSchema,
    tags: [...new Set([...flow.tags, ...d.tags])],
    schedules: d.schedules,
    environment: d.environment,
    retries: d.retries ?? flow.retries,
    retryDelaysMs: d.retryDelaysMs ?? flow.retryDelaysMs,
  };
  if (d.workQueue !== undefined) spec.workQueue = d.workQueue;
  if (d.description !== undefined) spec.description = d.description;
  if (d.identity !== undefined) spec.identity = d.identity;
  if (d.project !== undefined) spec.project = d.project;
  if (d.concurrencyLimit !== undefined) spec.concurrencyLimit = d.concurrencyLimit;
  if (d.env !== undefined) spec.env = d.env;
  return spec;
}

function locateServerError(project: ProjectFile, d: ProjectDeployment, e: TesseraError, apiUrl: string): LocatedIssue {
  const base = ['deployments', d.index] as const;
  switch (e.code) {
    case 'ERR_UNKNOWN_POOL':
      return project.issue(
        [...base, 'work_pool'],
        `work pool ${JSON.stringify(d.workPool)} does not exist on ${apiUrl}; create it with \`tessera pools create ${d.workPool}\` or use an existing one (\`tessera pools ls\`)`,
      );
    case 'ERR_INVALID_SCHEDULE':
      return project.issue([...base, d.schedules.length ? 'schedule' : 'name'], `the server rejected a schedule: ${e.message}`);
    default: {
      const issues = Array.isArray(e.details?.issues) ? (e.details.issues as { path?: string; message?: string }[]) : [];
      const detail = issues.map((i) => `${i.path ? `${i.path}: ` : ''}${i.message ?? ''}`).join('; ');
      return project.issue(
        [...base, 'name'],
        `the server rejected deployment ${JSON.stringify(d.name)}: ${e.code} ${e.message}${detail ? ` (${detail})` : ''}`,
      );
    }
  }
}

/** One line per deployment: `✓ hello  flow hello · pool default · cron "0 2 * * *" · id 1a2b3c4d`. */
export function formatDeployOutcomes(result: DeployResult, c: Pick<CliContext, 'style'>): string[] {
  const { style } = c;
  const width = Math.max(...result.outcomes.map((o) => o.name.length));
  return result.outcomes.map((o) => {
    if (o.deployment) {
      const d = o.deployment;
      const parts = [`flow ${d.flowName}`, `pool ${d.workQueue ? `${d.workPool}/${d.workQueue}` : d.workPool}`];
      if (d.schedules.length > 0) parts.push(d.schedules.map(formatSchedule).join(', '));
      if (d.identity?.audiences.length) parts.push(`aud ${d.identity.audiences.join(', ')}`);
      parts.push(style.dim(`id ${shortId(d.id)}`));
      return `${style.green('✓')} ${padEnd(style.bold(o.name), width)}  ${parts.join(style.dim(' · '))}`;
    }
    const where = o.issue ? formatIssueLine(o.issue) : `${o.error?.code}: ${o.error?.message}`;
    return `${style.red('✗')} ${padEnd(style.bold(o.name), width)}  ${where}${o.error ? style.dim(`  (${o.error.code})`) : ''}`;
  });
}

/** Exit status of a deploy: 0 all deployed; 2 when every failure is a fix in the file (unknown pool); else 1. */
export function deployExitCode(result: DeployResult): number {
  const failed = result.outcomes.filter((o) => o.error);
  if (failed.length === 0) return EXIT.ok;
  return failed.every((o) => exitCodeFor(o.error) === EXIT.usage) ? EXIT.usage : EXIT.failure;
}

/** `tessera deploy`. */
export function registerDeployCommand(program: Command, ctx: () => CliContext, setExitCode: (code: number) => void): void {
  program
    .command('deploy')
    .description('create or update the deployments declared in tessera.yaml')
    .option('-f, --file <path>', 'the project file', 'tessera.yaml')
    .option('-n, --name <deployment>', 'deploy only this deployment (repeatable)', collect)
    .option('--json', 'print the deployments (or their errors) as JSON')
    .option(
      '--token-file <path>',
      `from CI: exchange the platform OIDC token in this file for a short-lived access token first (env ${FEDERATED_TOKEN_FILE_ENV}); see docs/security.md`,
    )
    .addHelpText(
      'after',
      `
tessera.yaml declares deployments, as prefect.yaml does:

  deployments:
    - name: nightly-etl
      entrypoint: flows/etl.ts:nightlyEtl     # path relative to this file : export name
      work_pool: default                      # or { name: default, work_queue: high }
      schedule: { cron: "0 2 * * *", timezone: Europe/Paris }   # or schedules: [...], { interval: 10m }
      parameters: { day: today }
      tags: [etl]
      environment: prod                       # default dev; part of the token subject
      identity: { audiences: [sts.amazonaws.com], max_lifetime: 1h }
      concurrency_limit: 1
      retries: 2                              # overrides the flow's own
      retry_delay: [30s, 5m]                  # numbers are seconds
      env: { LOG_FORMAT: json }               # not for secrets: stored in plain text
${examples(
  ['tessera deploy'],
  ['tessera deploy --file deploy/tessera.yaml --name nightly-etl'],
  ['tessera deploy --json'],
  ['tessera deploy --token-file "$RUNNER_TEMP/oidc-token"', 'from CI, under a trust policy'],
)}`,
    )
    .action(async (opts: { file: string; name?: string[]; json?: boolean; tokenFile?: string }) => {
      const c = ctx();
      // --token-file, or TESSERA_FEDERATED_TOKEN_FILE (which every command honours): exchange first, so
      // a refused token fails before anything is loaded, with the server's reason.
      const tokenFile = opts.tokenFile ?? (c.io.env[FEDERATED_TOKEN_FILE_ENV] || undefined);
      let client = c.client();
      if (tokenFile) {
        const federated = await federatedClient(client.baseUrl, tokenFile);
        client = federated.client;
        const p = federated.answer.principal;
        if (!opts.json && p) {
          c.err(
            c.errStyle.dim(
              `authenticated as ${p.kind} ${p.label} (${(p.grants ?? []).map((g) => g.role).join(', ') || 'no role'}) for ${Math.round(federated.answer.expires_in / 60)} min`,
            ),
          );
        }
      }
      const result = await deployProject(client, { file: opts.file, cwd: c.io.cwd, ...(opts.name ? { names: opts.name } : {}) });
      setExitCode(deployExitCode(result));
      if (opts.json) {
        return c.json(
          result.outcomes.map((o) =>
            o.deployment
              ? { name: o.name, ok: true, deployment: o.deployment }
              : { name: o.name, ok: false, error: { code: o.error?.code, message: o.error?.message, ...(o.issue ?? {}) } },
          ),
        );
      }
      for (const line of formatDeployOutcomes(result, c)) c.out(line);
      const ok = result.outcomes.filter((o) => o.deployment).length;
      const failed = result.outcomes.length - ok;
      const summary = `deployed ${ok} of ${result.outcomes.length} deployment${result.outcomes.length === 1 ? '' : 's'} from ${result.project.displayName} to ${client.baseUrl}`;
      c.out(failed === 0 ? c.style.dim(summary) : `${summary}; ${c.style.red(`${failed} failed`)}`);
      if (failed === 0 && ok > 0) c.out(c.style.dim(`  next: tessera deployments run ${result.outcomes[0]?.name} --watch`));
    });
}
