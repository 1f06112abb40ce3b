import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TesseraError } from '@tessera/core';
import { type AnyFlow, isFlow } from '../flow.js';
import { describeThrown } from '../lib/run-error.js';

const EXPORT_NAME = /^[A-Za-z_$][\w$]*$/;

/**
 * Imports the flow an entrypoint names: `path/to/file.ts:exportName`, the path relative to `cwd`.
 * TypeScript files need a loader such as tsx registered in the process (the worker does that).
 *
 * @throws TesseraError `ERR_ENTRYPOINT` saying what is wrong: malformed entrypoint, file not found
 *   (with the resolved path), import failure, no such export (listing the exports that are flows), or
 *   an export that is not a flow.
 * @example const nightly = await loadFlowFromEntrypoint('flows/etl.ts:nightly', '/srv/project');
 */
export async function loadFlowFromEntrypoint(entrypoint: string, cwd: string = process.cwd()): Promise<AnyFlow> {
  const sep = typeof entrypoint === 'string' ? entrypoint.lastIndexOf(':') : -1;
  const file = sep > 0 ? entrypoint.slice(0, sep) : '';
  const exportName = sep > 0 ? entrypoint.slice(sep + 1) : '';
  if (file === '' || !EXPORT_NAME.test(exportName)) {
    throw new TesseraError(
      'ERR_ENTRYPOINT',
      `entrypoint ${JSON.stringify(entrypoint)} is malformed; expected path/to/file.ts:exportName, e.g. flows/etl.ts:nightly`,
      { details: { entrypoint } },
    );
  }
  const path = resolve(cwd, file);
  const info = await stat(path).catch(() => null);
  if (!info?.isFile()) {
    throw new TesseraError('ERR_ENTRYPOINT', `entrypoint "${entrypoint}": file not found: ${path} (the path is relative to ${cwd})`, {
      details: { entrypoint, path },
    });
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (error) {
    const hint =
      (error as { code?: unknown })?.code === 'ERR_UNKNOWN_FILE_EXTENSION'
        ? '; TypeScript entrypoints need a loader: run with `node --import tsx`'
        : '';
    throw new TesseraError('ERR_ENTRYPOINT', `entrypoint "${entrypoint}": importing ${path} failed: ${describeThrown(error)}${hint}`, {
      cause: error,
      details: { entrypoint, path },
    });
  }
  const value = mod[exportName];
  if (value === undefined) {
    const flows = Object.keys(mod).filter((k) => isFlow(mod[k]));
    const found = flows.length > 0 ? `exports that are flows: ${flows.join(', ')}` : 'it exports no flows';
    throw new TesseraError('ERR_ENTRYPOINT', `entrypoint "${entrypoint}": ${path} has no export named "${exportName}"; ${found}`, {
      details: { entrypoint, path, flows },
    });
  }
  if (!isFlow(value)) {
    const kind = value === null ? 'null' : typeof value;
    throw new TesseraError(
      'ERR_ENTRYPOINT',
      `entrypoint "${entrypoint}": export "${exportName}" is not a flow (it is ${kind === 'object' || kind === 'undefined' ? 'an' : 'a'} ${kind}); define it with flow({ name: '…' }, async (params) => …)`,
      { details: { entrypoint, path } },
    );
  }
  return value;
}
