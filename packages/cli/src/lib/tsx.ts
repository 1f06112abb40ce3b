let registered = false;

/**
 * Lets this process import TypeScript flow files, by registering tsx's ESM loader. Only commands
 * that load entrypoints (`deploy`, `run`, `dev --deploy`) call it, so the others start fast.
 */
export async function registerTypeScriptLoader(): Promise<void> {
  if (registered) return;
  const { register } = await import('tsx/esm/api');
  register();
  registered = true;
}
