/** The claims of a run identity token. See docs/identity.md. */
export interface RunTokenClaims {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  iat: number;
  nbf: number;
  jti: string;
  workspace: string;
  project: string;
  flow: string;
  deployment: string | null;
  deployment_id: string | null;
  environment: string;
  run_id: string;
  run_attempt: number;
  work_pool: string | null;
  worker: string | null;
  trigger_kind: string;
  triggered_by: string;
  tags: string[];
  /** Version of the template that built `sub`. */
  sub_template_version: number;
  task?: string;
  task_run_id?: string;
  /** RFC 9449 confirmation: thumbprint of the DPoP key the token is bound to. */
  cnf?: { jkt: string };
  'https://aws.amazon.com/tags'?: { principal_tags: Record<string, string[]>; transitive_tag_keys?: string[] };
}

/** Prefix of every run credential, so scanners and redaction can spot one. */
export const RUN_CREDENTIAL_PREFIX = 'tsr_';

/** Every claim a run identity token may carry, in documentation order (advertised in discovery as `claims_supported`). */
export const RUN_TOKEN_CLAIM_NAMES = [
  'iss',
  'sub',
  'aud',
  'exp',
  'iat',
  'nbf',
  'jti',
  'workspace',
  'project',
  'flow',
  'deployment',
  'deployment_id',
  'environment',
  'run_id',
  'run_attempt',
  'work_pool',
  'worker',
  'trigger_kind',
  'triggered_by',
  'tags',
  'sub_template_version',
  'task',
  'task_run_id',
  'cnf',
  'https://aws.amazon.com/tags',
] as const;
