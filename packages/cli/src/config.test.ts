import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from './config.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'tessera-config-'));
}

describe('resolveConfig', () => {
  it('defaults to the local server and ~/.tessera', () => {
    const cwd = tempDir();
    const config = resolveConfig({ env: { HOME: '/home/ana', TESSERA_HOME: join(cwd, 'home') }, cwd });
    expect(config.apiUrl).toBe('http://127.0.0.1:4200');
    expect(config.home).toBe(join(cwd, 'home'));
    expect(config.port).toBeUndefined();
    expect(config.configFile).toBeUndefined();
  });

  it('applies flags > environment > config file > defaults', () => {
    const cwd = tempDir();
    writeFileSync(
      join(cwd, 'tessera.config.yaml'),
      'api_url: http://file:1\nport: 1111\nhost: 127.0.0.1\npublic_url: https://file.example\ndatabase_url: /file.db\n',
    );
    const env = { TESSERA_API_URL: 'http://env:2', TESSERA_PORT: '2222', TESSERA_HOME: join(cwd, 'h') };
    const fromFile = resolveConfig({ env: { TESSERA_HOME: join(cwd, 'h') }, cwd });
    expect(fromFile).toMatchObject({
      apiUrl: 'http://file:1',
      port: 1111,
      host: '127.0.0.1',
      publicUrl: 'https://file.example',
      databaseUrl: '/file.db',
    });
    expect(fromFile.configFile).toBe(join(cwd, 'tessera.config.yaml'));
    expect(resolveConfig({ env, cwd })).toMatchObject({ apiUrl: 'http://env:2', port: 2222, databaseUrl: '/file.db' });
    expect(resolveConfig({ env, cwd, flags: { apiUrl: 'http://flag:3/', port: 3333 } })).toMatchObject({
      apiUrl: 'http://flag:3',
      port: 3333,
    });
  });

  it('reads $TESSERA_HOME/config.yaml when there is no tessera.config.yaml in the working directory', () => {
    const cwd = tempDir();
    const home = join(cwd, 'home');
    mkdirSync(home);
    writeFileSync(join(home, 'config.yaml'), 'api_url: http://from-home:4200\n');
    expect(resolveConfig({ env: { TESSERA_HOME: home }, cwd })).toMatchObject({
      apiUrl: 'http://from-home:4200',
      configFile: join(home, 'config.yaml'),
    });
  });

  it('rejects an invalid config file with file, line, column and key', () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, 'tessera.config.yaml'), 'api_url: http://ok:1\nprot: 80\nport: eighty\n');
    expect(() => resolveConfig({ env: { TESSERA_HOME: join(cwd, 'h') }, cwd })).toThrow(
      expect.objectContaining({
        code: 'ERR_CONFIG',
        message:
          'tessera.config.yaml: 2 problems\ntessera.config.yaml:2:1  prot: unknown key "prot"; did you mean "port"?\ntessera.config.yaml:3:7  port: expected a number, found the string "eighty"',
      }),
    );
  });

  it('rejects a bad TESSERA_PORT or TESSERA_API_URL, naming the variable', () => {
    const cwd = tempDir();
    expect(() => resolveConfig({ env: { TESSERA_PORT: 'http', TESSERA_HOME: cwd }, cwd })).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG', message: expect.stringMatching(/^TESSERA_PORT="http" is not a port number/) }),
    );
    expect(() => resolveConfig({ env: { TESSERA_API_URL: 'localhost:4200', TESSERA_HOME: cwd }, cwd })).toThrow(
      /^TESSERA_API_URL="localhost:4200" is not an http\(s\) URL/,
    );
  });

  it('takes internal URLs from --internal-url, else TESSERA_INTERNAL_URLS, else internal_urls, naming what is wrong', () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, 'tessera.config.yaml'), 'internal_urls:\n  - http://file.svc:4200\n  - http://file-2.svc:4200\n');
    const home = join(cwd, 'h');
    expect(resolveConfig({ env: { TESSERA_HOME: home }, cwd }).internalUrls).toEqual(['http://file.svc:4200', 'http://file-2.svc:4200']);
    const env = { TESSERA_HOME: home, TESSERA_INTERNAL_URLS: 'http://env.svc:4200, https://env-2.svc' };
    expect(resolveConfig({ env, cwd }).internalUrls).toEqual(['http://env.svc:4200', 'https://env-2.svc']);
    expect(resolveConfig({ env, cwd, flags: { internalUrls: ['http://flag.svc:1'] } }).internalUrls).toEqual(['http://flag.svc:1']);
    expect(() => resolveConfig({ env: { ...env, TESSERA_INTERNAL_URLS: 'http://ok.svc,tessera.svc:4200' }, cwd })).toThrow(
      /^TESSERA_INTERNAL_URLS: "tessera.svc:4200" is not an http\(s\) URL/,
    );
    expect(() => resolveConfig({ env, cwd, flags: { internalUrls: ['ftp://x'] } })).toThrow(
      /^--internal-url "ftp:\/\/x" is not an http\(s\) URL/,
    );
    // A password in a mistyped URL is not quoted back.
    for (const bad of ['admin:s3cret@tessera.svc:4200', 'ftp://admin:s3cret@tessera.svc']) {
      expect(() => resolveConfig({ env: { ...env, TESSERA_INTERNAL_URLS: bad }, cwd })).toThrow(/\*\*\*@tessera\.svc/);
      expect(() => resolveConfig({ env, cwd, flags: { internalUrls: [bad] } })).toThrow(/^--internal-url "(?!.*s3cret)/);
      expect(() => resolveConfig({ env: { ...env, TESSERA_API_URL: bad }, cwd })).toThrow(/^TESSERA_API_URL="(?!.*s3cret)/);
    }
    // An empty list does not hide the config file's.
    expect(resolveConfig({ env: { TESSERA_HOME: home, TESSERA_INTERNAL_URLS: ' , ' }, cwd }).internalUrls).toEqual([
      'http://file.svc:4200',
      'http://file-2.svc:4200',
    ]);
    writeFileSync(join(cwd, 'tessera.config.yaml'), 'internal_urls:\n  - http://ok.svc\n  - svc:4200\n');
    expect(() => resolveConfig({ env: { TESSERA_HOME: home }, cwd })).toThrow(
      /tessera\.config\.yaml:3:\d+ +internal_urls\[1\]: expected an http\(s\) URL/,
    );
  });
});
