/** `tessera server start` / `tessera dev` key and TLS options: flags over environment. */
import { describe, expect, it } from 'vitest';
import { resolveKeyAndTlsOptions } from './commands/server.js';

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
