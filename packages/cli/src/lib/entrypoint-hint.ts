import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/**
 * The nearest package.json above `file` and whether it declares `"type": "module"`. Flow files are
 * loaded as ES modules; in a CommonJS package, tsx compiles them to CommonJS and named exports are
 * lost or the import fails with a require() cycle, which is hard to read.
 */
function packageType(file: string): { path: string | null; esm: boolean } {
  let dir = dirname(file);
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        return { path: pkg, esm: (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: string }).type === 'module' };
      } catch {
        return { path: pkg, esm: false };
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return { path: null, esm: false };
    dir = parent;
  }
}

/**
 * A hint to add to an entrypoint error when the flow file is a `.ts`/`.js` file outside an ESM
 * package, the usual cause of "no export named …" and require() cycle errors; else `''`.
 */
export function entrypointHint(entrypoint: string, cwd: string): string {
  const file = resolve(cwd, entrypoint.slice(0, Math.max(0, entrypoint.lastIndexOf(':'))));
  if (!/\.(ts|tsx|js|jsx)$/.test(file) || !existsSync(file)) return '';
  const pkg = packageType(file);
  if (pkg.esm) return '';
  return pkg.path
    ? `; flow files are ES modules: add "type": "module" to ${pkg.path} (or rename the file to .mts)`
    : `; flow files are ES modules: add a package.json with "type": "module" next to your flows (or rename the file to .mts)`;
}
