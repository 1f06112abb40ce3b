import {
  type DeploymentSpec,
  type PutWorkspaceIdentityRequest,
  type StateCause,
  type SubTemplateKey,
  TesseraError,
  type WorkspaceIdentitySettings,
} from '@tessera/core';
import {
  DEFAULT_SUB_TEMPLATE,
  formatSubject,
  parseSubTemplate,
  renderSubject,
  SUB_TEMPLATE_VERSION,
  type SubjectValues,
  type SubTemplate,
} from '@tessera/identity';
import type { Kysely, Transaction } from 'kysely';
import { iso } from '../lib/clock.js';
import { fromJson, toJson } from '../lib/json.js';
import type { Database } from '../store/schema.js';
import type { ServiceContext } from './context.js';

type Db = Kysely<Database> | Transaction<Database>;

/** The one workspace this server has (issue #5 may add more). */
export const DEFAULT_WORKSPACE = 'default';

/** A stand-in for a deployment id not yet assigned: ids are UUIDs, so the length is what counts. */
const ID_PLACEHOLDER = '00000000-0000-0000-0000-000000000000';

interface StoredWorkspaceIdentity {
  subTemplate?: SubTemplateKey[];
}

/** Which template a deployment's runs get, and where it came from (for error messages). */
export interface ResolvedSubTemplate extends SubTemplate {
  source: 'deployment' | 'workspace' | 'default';
}

/**
 * The workspace's `sub` template, or the built-in default when none was set.
 * @throws TesseraError `ERR_NOT_FOUND` for a workspace other than `default`.
 */
export async function workspaceSubTemplate(
  db: Db,
  workspace = DEFAULT_WORKSPACE,
): Promise<{ template: SubTemplate; isDefault: boolean; updatedAt: string | null }> {
  assertWorkspace(workspace);
  const row = await db.selectFrom('workspace_settings').selectAll().where('workspace', '=', workspace).executeTakeFirst();
  const stored = fromJson<StoredWorkspaceIdentity>(row?.identity, {});
  if (!stored.subTemplate)
    return { template: { version: SUB_TEMPLATE_VERSION, keys: DEFAULT_SUB_TEMPLATE }, isDefault: true, updatedAt: null };
  return { template: parseSubTemplate(stored.subTemplate, 'subTemplate'), isDefault: false, updatedAt: row?.updated_at ?? null };
}

/** The template a deployment's runs get: the deployment's own, else the workspace's, else the default. */
export async function resolveSubTemplate(db: Db, deploymentTemplate: readonly SubTemplateKey[] | undefined): Promise<ResolvedSubTemplate> {
  if (deploymentTemplate) return { ...parseSubTemplate(deploymentTemplate, 'identity.subTemplate'), source: 'deployment' };
  const ws = await workspaceSubTemplate(db);
  return { ...ws.template, source: ws.isDefault ? 'default' : 'workspace' };
}

/**
 * Deploy-time check: renders the `sub` the deployment's runs will get, so a template that would
 * exceed 127 characters fails `tessera deploy`, not every run.
 * @returns the `sub` its runs will carry.
 * @throws TesseraError `ERR_VALIDATION` naming `identity.subTemplate` and the length.
 */
export async function checkDeploymentSubject(db: Db, spec: DeploymentSpec): Promise<string> {
  const template = await resolveSubTemplate(db, spec.identity?.subTemplate);
  const existing = await db.selectFrom('deployments').select('id').where('name', '=', spec.name).executeTakeFirst();
  const values: SubjectValues = {
    workspace: DEFAULT_WORKSPACE,
    project: spec.project ?? 'default',
    flow: spec.flowName,
    deployment: spec.name,
    deployment_id: existing?.id ?? ID_PLACEHOLDER,
    environment: spec.environment ?? 'dev',
    work_pool: spec.workPool,
  };
  try {
    return renderSubject(template.keys, values, 'identity.subTemplate');
  } catch (e) {
    if (!(e instanceof TesseraError) || template.source === 'deployment') throw e;
    // The workspace's template is at fault; say so, and how to override it for this deployment.
    throw new TesseraError(
      'ERR_VALIDATION',
      `${e.message} The template is the ${template.source === 'workspace' ? "workspace's" : 'default'}; set identity.subTemplate on deployment "${spec.name}" to a shorter one.`,
      { details: e.details ?? { field: 'identity.subTemplate' } },
    );
  }
}

/** Workspace identity settings: `GET/PUT /api/workspaces/:workspace/identity`. */
export class WorkspaceIdentityService {
  constructor(private readonly ctx: ServiceContext) {}

  /**
   * The workspace's template with an example `sub`.
   * @throws TesseraError `ERR_NOT_FOUND` for a workspace other than `default`.
   */
  async get(workspace: string): Promise<WorkspaceIdentitySettings> {
    const { template, isDefault, updatedAt } = await workspaceSubTemplate(this.ctx.db, workspace);
    return {
      workspace,
      subTemplate: [...template.keys],
      subTemplateVersion: template.version,
      isDefault,
      example: formatSubject(template.keys, EXAMPLE_VALUES),
      updatedAt,
    };
  }

  /**
   * Sets the workspace's template (or `null`: back to the default). Refused when a deployment that
   * follows the workspace's template would get a `sub` over 127 characters.
   * @throws TesseraError `ERR_VALIDATION` naming `subTemplate` and the deployments it would break.
   */
  async put(workspace: string, req: PutWorkspaceIdentityRequest, actor: StateCause): Promise<WorkspaceIdentitySettings> {
    assertWorkspace(workspace);
    const template = req.subTemplate === null ? null : parseSubTemplate(req.subTemplate, 'subTemplate');
    const keys = template?.keys ?? DEFAULT_SUB_TEMPLATE;
    const deployments = await this.ctx.db
      .selectFrom('deployments as d')
      .innerJoin('flows as f', 'f.id', 'd.flow_id')
      .innerJoin('work_pools as p', 'p.id', 'd.work_pool_id')
      .select(['d.id', 'd.name', 'd.environment', 'd.project', 'd.identity', 'f.name as flow', 'p.name as pool'])
      .execute();
    const broken: string[] = [];
    for (const d of deployments) {
      if (fromJson<{ subTemplate?: unknown }>(d.identity, {}).subTemplate) continue;
      try {
        renderSubject(keys, {
          workspace,
          project: d.project,
          flow: d.flow,
          deployment: d.name,
          deployment_id: d.id,
          environment: d.environment,
          work_pool: d.pool,
        });
      } catch (e) {
        broken.push(`"${d.name}" (${(e as TesseraError).details?.length} characters)`);
      }
    }
    if (broken.length > 0) {
      throw new TesseraError(
        'ERR_VALIDATION',
        `subTemplate: with keys ${keys.join(', ')} the token subject of deployment ${broken.slice(0, 5).join(', ')}${broken.length > 5 ? ` and ${broken.length - 5} more` : ''} would exceed 127 characters (GCP's limit). Use fewer keys, or give those deployments their own identity.subTemplate first.`,
        { details: { field: 'subTemplate', deployments: broken.length } },
      );
    }
    const now = iso(this.ctx.clock.now());
    const identity = toJson(template ? { subTemplate: [...template.keys] } : {});
    await this.ctx.db
      .insertInto('workspace_settings')
      .values({ workspace, identity, updated_at: now, updated_by: toJson(actor) })
      .onConflict((oc) => oc.column('workspace').doUpdateSet({ identity, updated_at: now, updated_by: toJson(actor) }))
      .execute();
    return this.get(workspace);
  }
}

const EXAMPLE_VALUES: SubjectValues = {
  workspace: DEFAULT_WORKSPACE,
  project: 'default',
  flow: 'etl',
  deployment: 'nightly-etl',
  deployment_id: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f',
  environment: 'prod',
  work_pool: 'default',
};

function assertWorkspace(workspace: string): void {
  if (workspace !== DEFAULT_WORKSPACE) {
    throw new TesseraError(
      'ERR_NOT_FOUND',
      `workspace "${workspace}" does not exist; this server has one workspace, "${DEFAULT_WORKSPACE}"`,
    );
  }
}
