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
  task?: string;
  task_run_id?: string;
}

/** Prefix of every run credential, so scanners and redaction can spot one. */
export const RUN_CREDENTIAL_PREFIX = 'tsr_';
