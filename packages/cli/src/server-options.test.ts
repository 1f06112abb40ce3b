/** `tessera server start` / `tessera dev` key and TLS options: flags over environment. */
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addServerOptions, configFlagsOf, resolveKeyAndTlsOptions, type ServerFlags } from './commands/server.js';
import { resolveConfig } from './config.js';

describe('resolveKeyAndTlsOptions', () => {
  it('reads the key settings from flags over TESSERA_* variables, paths relative to the working directory', () => {
    const env = { TESSERA_KEY_FILE: 'env-keys.json', TESSERA_KEY_PRE_PUBLISH: '20m', TESSERA_KEY_START_PUBLISH: '2m' };
    expect(resolveKeyAndTlsOptions({}, env, '/srv')).toEqual({
      keyFile: '/srv/env-keys.json',
      keys: { prePublish: 1_200_000, startPublish: 120_000 },
    });
    expect(resolveKeyAndTlsOptions({ keyFile: 'k.json', keyStartPublish: '0' }, env, '/srv')).toEqual({
      keyFile: '/srv/k.json',
      keys: { prePublish: 1_200_000, startPublish: 0 },
    });
  });

  it('names the flag of a bad duration', () => {
    expect(() => resolveKeyAndTlsOptions({ keyStartPublish: 'soon' }, {}, '/srv')).toThrow(
      /--key-start-publish: "soon" is not a valid duration/,
    );
  });
});

describe('--internal-url', () => {
  it('is repeatable, and reaches the configuration as internalUrls, over TESSERA_INTERNAL_URLS', () => {
    const cmd = addServerOptions(new Command('start')).exitOverride();
    cmd.parse(['--internal-url', 'http://a.svc:4200', '--internal-url', 'https://b.corp'], { from: 'user' });
    const flags = cmd.opts<ServerFlags>();
    const env = { TESSERA_HOME: '/nonexistent-home', TESSERA_INTERNAL_URLS: 'http://env.svc' };
    expect(resolveConfig({ flags: configFlagsOf(flags), env, cwd: '/' }).internalUrls).toEqual(['http://a.svc:4200', 'https://b.corp']);
    expect(resolveConfig({ flags: configFlagsOf({}), env, cwd: '/' }).internalUrls).toEqual(['http://env.svc']);
  });
});
