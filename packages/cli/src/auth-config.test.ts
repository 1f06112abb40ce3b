import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clientSecretEnv } from './auth-config.js';
import { resolveConfig } from './config.js';

function project(yaml: string, files: Record<string, string> = {}): string {
  const cwd = mkdtempSync(join(tmpdir(), 'tessera-auth-config-'));
  writeFileSync(join(cwd, 'tessera.config.yaml'), yaml);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(cwd, name), content);
  return cwd;
}

const PROVIDER = `auth:
  providers:
    - name: corp
      issuer: https://login.example.com
      client_id: tessera
      scopes: [openid, email, groups]
      role_rules:
        - role: developer
          when: '"data-eng" in claims.groups'
        - { role: viewer, workspace: default, when: 'true' }
  sessions:
    browser_idle: 30m
    cli_lifetime: 8h
trust_proxy: true
`;

describe('the auth: section of tessera.config.yaml', () => {
  it('reads providers, role rules and sessions; the client secret comes from the environment', () => {
    const cwd = project(PROVIDER);
    const config = resolveConfig({ cwd, env: { TESSERA_HOME: join(cwd, 'h'), TESSERA_AUTH_CORP_CLIENT_SECRET: 's3cret' } });
    expect(config.trustProxy).toBe(true);
    expect(config.auth).toEqual({
      providers: [
        {
          name: 'corp',
          issuer: 'https://login.example.com',
          clientId: 'tessera',
          clientSecret: 's3cret',
          scopes: ['openid', 'email', 'groups'],
          roleRules: [
            { role: 'developer', when: '"data-eng" in claims.groups' },
            { role: 'viewer', workspace: 'default', when: 'true' },
          ],
        },
      ],
      sessions: { browserIdle: '30m', cliLifetime: '8h' },
    });
  });

  it('names the environment variable per provider', () => {
    expect(clientSecretEnv('corp-eu')).toBe('TESSERA_AUTH_CORP_EU_CLIENT_SECRET');
  });

  it('reads a secret file or a private key file next to the config file; the environment wins', () => {
    const withFile = PROVIDER.replace('      client_id: tessera\n', '      client_id: tessera\n      client_secret_file: corp.secret\n');
    const cwd = project(withFile, { 'corp.secret': 'from-file\n' });
    const env = { TESSERA_HOME: join(cwd, 'h') };
    expect(resolveConfig({ cwd, env }).auth?.providers?.[0]?.clientSecret).toBe('from-file');
    expect(resolveConfig({ cwd, env: { ...env, TESSERA_AUTH_CORP_CLIENT_SECRET: 'from-env' } }).auth?.providers?.[0]?.clientSecret).toBe(
      'from-env',
    );
    const withKey = PROVIDER.replace('      client_id: tessera\n', '      client_id: tessera\n      private_key_file: corp.jwk.json\n');
    const cwd2 = project(withKey, { 'corp.jwk.json': JSON.stringify({ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd', kid: 'k1' }) });
    const p = resolveConfig({ cwd: cwd2, env: { TESSERA_HOME: join(cwd2, 'h') } }).auth?.providers?.[0];
    expect(p?.privateKeyJwk).toMatchObject({ kty: 'EC', kid: 'k1' });
    expect(p?.clientSecret).toBeUndefined();
  });

  it('says how to give a provider its credential when none is configured', () => {
    const cwd = project(PROVIDER);
    expect(() => resolveConfig({ cwd, env: { TESSERA_HOME: join(cwd, 'h') } })).toThrow(
      expect.objectContaining({
        code: 'ERR_CONFIG',
        message: expect.stringMatching(/set TESSERA_AUTH_CORP_CLIENT_SECRET, or client_secret_file/),
      }),
    );
  });

  it('rejects an unknown key with file, line and a suggestion', () => {
    const cwd = project(PROVIDER.replace('role_rules:', 'role_rule:'));
    expect(() => resolveConfig({ cwd, env: { TESSERA_HOME: join(cwd, 'h'), TESSERA_AUTH_CORP_CLIENT_SECRET: 'x' } })).toThrow(
      expect.objectContaining({
        code: 'ERR_CONFIG',
        message: expect.stringMatching(
          /tessera\.config\.yaml:7:7 {2}auth\.providers\[0\]\.role_rule: unknown key "role_rule"; did you mean "role_rules"\?/s,
        ),
      }),
    );
  });

  it('reads TESSERA_TRUST_PROXY as true/false or a list of proxy addresses', () => {
    const cwd = project('port: 1\n');
    const env = { TESSERA_HOME: join(cwd, 'h') };
    expect(resolveConfig({ cwd, env: { ...env, TESSERA_TRUST_PROXY: '10.0.0.0/8, 127.0.0.1' } }).trustProxy).toEqual([
      '10.0.0.0/8',
      '127.0.0.1',
    ]);
    expect(resolveConfig({ cwd, env: { ...env, TESSERA_TRUST_PROXY: 'false' } }).trustProxy).toBe(false);
    expect(resolveConfig({ cwd, env }).trustProxy).toBeUndefined();
  });
});
