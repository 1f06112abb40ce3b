/** Environment variables the worker sets for a flow-run process. */
export const RUN_ENV = {
  apiUrl: 'TESSERA_API_URL',
  runId: 'TESSERA_RUN_ID',
  attempt: 'TESSERA_RUN_ATTEMPT',
  /**
   * Secret. The SDK reads it once and removes it from `process.env`, so user code printing its
   * environment does not show it (it stays in `/proc/<pid>/environ`, readable by the same user).
   */
  credential: 'TESSERA_RUN_CREDENTIAL',
  entrypoint: 'TESSERA_ENTRYPOINT',
} as const;

/** Default server address. */
export const DEFAULT_API_URL = 'http://127.0.0.1:4200';
