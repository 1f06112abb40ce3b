/** `npm start`'s script end to end: dev server + worker, examples deployed, one identity-carrying run. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '@tessera/testing';
import { expect, it } from 'vitest';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

it('npm start: runs the call-protected-api example, whose token the protected API accepts', async () => {
  const home = mkdtempSync(join(tmpdir(), 'tessera-start-'));
  const [port, apiPort] = [await freePort(), await freePort()];
  try {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'examples/start.ts', '--once', '--port', String(port), '--api-port', String(apiPort), '--home', home],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, out).toBe(0);
    expect(out).toContain('local mode');
    expect(out).toMatch(/call-protected-api\s+#[0-9a-f]{8}\s+✓ Completed/);
    expect(out).toContain('sub "ws:default:deployment:call-protected-api:env:dev"');
    expect(out).toContain(`aud "http://127.0.0.1:${apiPort}"`);
    expect(out).toContain('accepted by examples/protected-api');
    expect(out).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
