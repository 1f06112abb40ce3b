/**
 * `@tessera/cli`: the `tessera` command. It parses, loads configuration and calls the other
 * packages; it holds no orchestration logic of its own.
 * @packageDocumentation
 */

export { buildSpec, type DeployOutcome, type DeployResult, deployProject } from './commands/deploy.js';
export { type CliConfig, CONFIG_ENV, type ConfigFlags, PROJECT_CONFIG_FILE, resolveConfig } from './config.js';
export { type FormatOptions, formatRunDetails, formatRunsTable, type RunDetails } from './format/runs.js';
export { EXIT, type ExitCode, exitCodeFor, formatError, UsageError } from './lib/exit.js';
export type { CliIo, OutputStream } from './lib/io.js';
export { buildParameters, parseParamAssignment, parseParamValue } from './lib/params.js';
export { buildProgram, main } from './main.js';
export {
  DEFAULT_ENVIRONMENT,
  DEFAULT_WORK_POOL,
  type LoadProjectFileOptions,
  loadProjectFile,
  type ProjectDeployment,
  type ProjectFile,
} from './project/load-project.js';
export type { LocatedIssue, SourceLocation } from './project/yaml-source.js';
