import { ApiClient, DEFAULT_API_URL, type FlowRun, RUN_ENV, redactSecrets, TesseraError } from '@tessera/core';
import { describeThrown } from '../lib/run-error.js';
import { FlowRunEngine } from './engine.js';
import { loadFlowFromEntrypoint } from './entrypoint.js';

/** How long the SDK keeps retrying the server (e.g. through a restart) during a run. */
const RUN_CLIENT_RETRY_MS = 10 * 60_000;
/** SIGTERM: how long to try sending queued logs before exiting. */
const SIGTERM_FLUSH_MS = 2_000;

/**
 * The main function of a flow-run process started by a worker; never returns (it exits).
 *
 * Reads the run's environment ({@link RUN_ENV}); removes the run credential from `process.env` before
 * any user code loads; fetches the run; imports the entrypoint relative to `process.cwd()`;
 * validates parameters; proposes Running; runs the flow; flushes task events and logs; proposes
 * Completed or Failed.
 *
 * Exit codes: 0 when the final state was reported (or the server declined to start the run),
 * 1 when the server could not be reached or the process was misconfigured, 1 at once when the IPC
 * channel to the worker closes (the worker died, so the run must not go on unsupervised), 143 on
 * SIGTERM after a best-effort flush of logs.
 */
export async function runFlowProcess(): Promise<never> {
  const code = await executeFlowProcess();
  process.exit(code);
}

async function executeFlowProcess(): Promise<number> {
  const env = process.env;
  const credential = env[RUN_ENV.credential];
  // Before any user code runs: a flow that dumps its environment must not leak the credential.
  delete env[RUN_ENV.credential];
  if (typeof process.send === 'function') {
    // The worker holds the other end; if it dies, so must we and whatever the flow started (the
    // worker made us a process group leader), or the run could execute twice.
    process.once('disconnect', () => {
      try {
        if (process.platform !== 'win32') process.kill(-process.pid, 'SIGKILL');
      } catch {
        // Not a group leader (started some other way): only this process goes.
      }
      process.exit(1);
    });
  }
  const runId = env[RUN_ENV.runId];
  const entrypoint = env[RUN_ENV.entrypoint];
  if (!runId || !credential) {
    const missing = [!runId && RUN_ENV.runId, !credential && RUN_ENV.credential].filter(Boolean).join(' and ');
    process.stderr.write(
      `tessera: ${missing} not set; flow-run processes are started by a Tessera worker (use \`tessera run\` to run a flow yourself)\n`,
    );
    return 1;
  }
  const client = new ApiClient({ baseUrl: env[RUN_ENV.apiUrl] || DEFAULT_API_URL, token: credential, retryForMs: RUN_CLIENT_RETRY_MS });
  let run: FlowRun;
  try {
    run = await client.getFlowRun(runId);
  } catch (error) {
    process.stderr.write(`tessera: cannot fetch flow run ${runId}: ${redactSecrets(describeThrown(error))}\n`);
    return 1;
  }
  const envAttempt = Number(env[RUN_ENV.attempt]);
  if (run.attempt < 1 && Number.isInteger(envAttempt) && envAttempt > 0) run = { ...run, attempt: envAttempt };

  const engine = new FlowRunEngine({
    client,
    run,
    loadFlow: async () => {
      if (!entrypoint)
        throw new TesseraError('ERR_ENTRYPOINT', `${RUN_ENV.entrypoint} is not set; the worker must pass the deployment's entrypoint`);
      return loadFlowFromEntrypoint(entrypoint, process.cwd());
    },
  });

  process.once('SIGTERM', () => {
    const reason = new TesseraError('ERR_CANCELLED', 'the flow-run process received SIGTERM (run cancelled or worker stopping); stopping');
    void engine.terminate(reason, SIGTERM_FLUSH_MS).finally(() => process.exit(143));
  });
  process.on('uncaughtException', (error) => {
    // An exception thrown from a callback of the user's code: fail the run with it rather than crash.
    if (!engine.abort(error)) {
      process.stderr.write(`tessera: uncaught exception: ${redactSecrets(error.stack ?? error.message)}\n`);
      process.exit(1);
    }
  });
  process.on('unhandledRejection', (reason) => {
    engine.log('warn', `unhandled promise rejection in flow code (a promise nobody awaited): ${describeThrown(reason)}`);
  });

  try {
    await engine.execute();
    return 0;
  } catch (error) {
    process.stderr.write(`tessera: could not report the outcome of flow run ${runId}: ${redactSecrets(describeThrown(error))}\n`);
    return 1;
  }
}
