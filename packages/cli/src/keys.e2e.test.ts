/**
 * End-to-end: `tessera keys …` and the server's key and TLS flags, the built CLI in a subprocess
 * against a real server. Needs the build: `npm run build`.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { ListSigningKeysResponse } from '@tessera/core';
import { type RunningServer, startServer } from '@tessera/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

let server: RunningServer;
let home: string;

function tessera(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: home,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: home,
        TESSERA_HOME: home,
        TESSERA_API_URL: server.url,
        NO_COLOR: '1',
        TZ: 'Europe/Paris',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build first (npm run build)`);
  home = mkdtempSync(join(tmpdir(), 'tessera-keys-e2e-'));
  const quiet = new Writable({ write: (_c, _e, done) => done() });
  server = await startServer({ home, port: 0, logLevel: 'warn', logStream: quiet, backgroundServices: false, keys: { prePublish: '10m' } });
});

afterAll(async () => {
  await server?.close();
  if (home) rmSync(home, { recursive: true, force: true });
});

describe('tessera keys', () => {
  it('ls --json lists the active RS256 and ES256 keys and the settings', async () => {
    const r = await tessera(['keys', 'ls', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout) as ListSigningKeysResponse;
    expect(res.items.map((k) => `${k.alg}:${k.state}`).sort()).toEqual(['ES256:active', 'RS256:active']);
    expect(res.settings).toEqual({
      prePublishMs: 600_000,
      // Local mode (loopback only): a restart's keys sign at once.
      startPublishMs: 0,
      rotationIntervalMs: 30 * 86_400_000,
      expiryLeewayMs: 600_000,
      keyFile: false,
    });
  });

  it('rotate publishes new keys that sign after the pre-publication delay; ls shows them pending, in local time with the zone', async () => {
    const r = await tessera(['keys', 'rotate']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /✓ new RS256 key \d{4}-\d{2}-\d{2}-[0-9a-f]{6}: published now, signs from \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} CE(S)?T/,
    );
    expect(r.stdout).toMatch(/✓ new ES256 key /);
    const ls = await tessera(['keys', 'ls']);
    expect(ls.code).toBe(0);
    const [header, ...rows] = ls.stdout.split('\n');
    expect(header).toMatch(
      /^KID\s+ALG\s+STATE\s+CREATED \(CES?T\)\s+ACTIVATES \(CES?T\)\s+RETIRES \(CES?T\)\s+EXPIRES \(CES?T\)\s+TOKENS$/,
    );
    expect(rows.filter((l) => / pending /.test(l))).toHaveLength(2);
    expect(rows.filter((l) => / active /.test(l))).toHaveLength(2);
    expect(ls.stdout).toContain('pre-publication 10 m 0 s');
  });

  it('publish --out writes the discovery document and a JWKS with pending keys, warning when the issuer differs', async () => {
    const out = join(home, 'site');
    const keys = (await server.services.keys.list()).items.filter((k) => k.published).map((k) => k.kid);
    const r = await tessera(['keys', 'publish', '--out', out, '--issuer', 'https://oidc.example.com/tessera']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`warning the server's issuer is ${server.issuer}, but these files name https://oidc.example.com/tessera`);
    const doc = JSON.parse(readFileSync(join(out, '.well-known', 'openid-configuration'), 'utf8')) as Record<string, unknown>;
    expect(doc.issuer).toBe('https://oidc.example.com/tessera');
    expect(doc.jwks_uri).toBe('https://oidc.example.com/tessera/.well-known/jwks.json');
    expect(doc.token_endpoint).toBeUndefined();
    expect(doc.id_token_signing_alg_values_supported).toEqual(['RS256', 'ES256']);
    const jwks = JSON.parse(readFileSync(join(out, '.well-known', 'jwks.json'), 'utf8')) as { keys: { kid: string; d?: string }[] };
    expect(jwks.keys.map((k) => k.kid).sort()).toEqual([...keys].sort());
    expect(jwks.keys).toHaveLength(4);
    expect(jwks.keys.every((k) => k.d === undefined)).toBe(true);

    const same = await tessera(['keys', 'publish', '--out', join(home, 'site2')]);
    expect(same.code).toBe(0);
    // The pending keys sign in about 10 minutes, after a 5-minute cache has refreshed: only the key-file warning.
    expect(same.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(
        /^warning the server keeps its private keys in memory only: each restart makes new keys, which sign at once, sooner than the site's caches \(max age 5 m 0 s\) refresh\. Publish again right after every restart, or start the server with --key-file$/,
      ),
    ]);
    expect(JSON.parse(readFileSync(join(home, 'site2', '.well-known', 'openid-configuration'), 'utf8')).issuer).toBe(server.issuer);
  });

  it("publish warns when a pending key signs before the site's caches refresh, and says when to publish again", async () => {
    const pending = (await server.services.keys.list()).items.filter((k) => k.state === 'pending');
    expect(pending).toHaveLength(2);
    const r = await tessera(['keys', 'publish', '--out', join(home, 'site3'), '--cache-max-age', '15m', '--json']);
    expect(r.code).toBe(0);
    for (const k of pending) {
      expect(r.stderr).toContain(`warning ${k.alg} key ${k.kid} signs from ${k.activatesAt}`);
      expect(r.stderr).toContain('a cache of the previous files (max age 15 m 0 s) may not show it by then');
    }
    const pub = JSON.parse(r.stdout) as { cacheMaxAgeMs: number; republishBy: string; nextRotationAt: string; warnings: string[] };
    expect(pub.cacheMaxAgeMs).toBe(900_000);
    expect(pub.warnings).toHaveLength(3);
    // The next scheduled key signs 10 min after it is made: a 15-minute cache must be fed as soon as it exists.
    expect(pub.republishBy).toBe(pub.nextRotationAt);
    const short = JSON.parse((await tessera(['keys', 'publish', '--out', join(home, 'site4'), '--cache-max-age', '1m', '--json'])).stdout);
    expect(Date.parse(short.republishBy) - Date.parse(short.nextRotationAt)).toBe(9 * 60_000);
    const bad = await tessera(['keys', 'publish', '--out', join(home, 'site5'), '--cache-max-age', 'soon']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('cacheMaxAge: not a duration');
  });

  it('rotate --revoke-current --alg RS256 revokes the current RS256 key only', async () => {
    const before = (await server.services.keys.list()).items.find((k) => k.alg === 'RS256' && k.state === 'active');
    const r = await tessera(['keys', 'rotate', '--revoke-current', '--alg', 'RS256', '--json']);
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout) as { created: { state: string }[]; revoked: { kid: string }[]; superseded: unknown[] };
    expect(res.revoked.map((k) => k.kid)).toEqual([before?.kid]);
    expect(res.created.map((k) => k.state)).toEqual(['active']);
    expect(res.superseded).toHaveLength(1); // the pending RS256 key of the previous rotation
  });
});

describe('tessera server start, key file and TLS flags', () => {
  it('refuses a key file others can read, exit 2 with the fix', async () => {
    const keyFile = join(home, 'keys.json');
    writeFileSync(keyFile, '{"keys":[]}');
    chmodSync(keyFile, 0o644);
    const r = await tessera(['server', 'start', '--port', '0', '--home', join(home, 'srv'), '--key-file', keyFile]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`error ERR_KEY_FILE_INSECURE: refusing to use key file ${keyFile}: its mode is 0644`);
    expect(r.stderr).toContain(`chmod 600 ${keyFile}`);
  });

  it('needs both --tls-cert and --tls-key', async () => {
    const r = await tessera(['server', 'start', '--port', '0', '--home', join(home, 'srv'), '--tls-cert', 'cert.pem']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('error ERR_CONFIG: HTTPS needs both a certificate and its key: --tls-key (TESSERA_TLS_KEY) is missing');
  });
});
