import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CredentialStore } from './credentials.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const login = {
  accessToken: 'at-secret',
  refreshToken: 'rt-secret',
  accessTokenExpiresAt: new Date(Date.now() + 600_000).toISOString(),
  person: { id: 'corp:alice', label: 'alice', roles: [] },
};

describe('CredentialStore', () => {
  it('writes credentials.json 0600 through an unpredictable temp file: a symlink planted at a guessable name receives nothing', () => {
    const home = mkdtempSync(join(tmpdir(), 'tessera-cred-'));
    dirs.push(home);
    // What an attacker sharing the directory could plant: the old temp name, pointing at their file.
    const stolen = join(home, 'stolen');
    writeFileSync(stolen, '');
    symlinkSync(stolen, join(home, `credentials.json.${process.pid}.tmp`));
    const store = new CredentialStore(home);
    store.save('http://127.0.0.1:4200', login as never);
    expect(readFileSync(stolen, 'utf8')).toBe('');
    const file = join(home, 'credentials.json');
    expect(lstatSync(file).isFile()).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).toContain('rt-secret');
    // No temp file is left behind.
    expect(readdirSync(home).filter((f) => f.endsWith('.tmp') && !f.includes(String(process.pid)))).toEqual([]);
  });
});
