import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_API_URL, TesseraError, withoutUserinfo } from '@tessera/core';
import type { AuthOptions } from '@tessera/server';
import * as z from 'zod';
import { authFileSchema, resolveAuthSection } from './auth-config.js';
import { strictObject } from './project/schema.js';
import { readYamlSource, validateYaml } from './project/yaml-source.js';

/** Settings the CLI resolves from flags, environment, config file and defaults, in that order. */
export interface CliConfig {
  /** Server the client commands talk to. @default http://127.0.0.1:4200 */
  apiUrl: string;
  /** Data directory of a server started here. @default ~/.tessera */
  home: string;
  host?: string;
  port?: number;
  databaseUrl?: string;
  publicUrl?: string;
  /** Other base URLs clients reach the server at directly, accepted as a DPoP proof's `htu` (`internal_urls`, env TESSERA_INTERNAL_URLS). */
  internalUrls?: string[];
  logLevel?: string;
  /** The server's `auth:` section (identity providers, sessions; docs/login.md). */
  auth?: AuthOptions;
  /** Trust `X-Forwarded-*` from a reverse proxy (`trust_proxy`, env TESSERA_TRUST_PROXY: `true` or proxy addresses). */
  trustProxy?: boolean | string[];
  /** The config file that was read, if any. */
  configFile?: string;
}

/** Values given as command-line flags; `undefined` when not given. */
export interface ConfigFlags {
  apiUrl?: string | undefined;
  home?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  databaseUrl?: string | undefined;
  publicUrl?: string | undefined;
  internalUrls?: string[] | undefined;
  logLevel?: string | undefined;
}

/** Environment variables the CLI reads. */
export const CONFIG_ENV = {
  apiUrl: 'TESSERA_API_URL',
  home: 'TESSERA_HOME',
  host: 'TESSERA_HOST',
  port: 'TESSERA_PORT',
  databaseUrl: 'TESSERA_DATABASE_URL',
  publicUrl: 'TESSERA_PUBLIC_URL',
  internalUrls: 'TESSERA_INTERNAL_URLS',
  logLevel: 'TESSERA_LOG_LEVEL',
} as const;

/** Config file in the working directory; else `$TESSERA_HOME/config.yaml`. */
export const PROJECT_CONFIG_FILE = 'tessera.config.yaml';

const url = z.url({
  protocol: /^https?$/,
  error: (iss) => `expected an http(s) URL such as "http://127.0.0.1:4200", found ${JSON.stringify(iss.input)}`,
});
const port = z.int().min(0).max(65535);

/** The config file's schema: every key optional, unknown keys rejected. */
export const configFileSchema = strictObject(
  {
    api_url: url.optional(),
    home: z.string().min(1).optional(),
    host: z.string().min(1).optional(),
    port: port.optional(),
    database_url: z.string().min(1).optional(),
    public_url: url.optional(),
    internal_urls: z.array(url).optional(),
    log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional(),
    auth: authFileSchema.optional(),
    trust_proxy: z.union([z.boolean(), z.array(z.string().min(1))]).optional(),
  },
  'a mapping such as { api_url: "http://127.0.0.1:4200" }',
);

function expandHome(p: string, cwd: string): string {
  if (p === '~') return homedir();
  if (p.startsWith('~/')) return join(homedir(), p.slice(2));
  return resolve(cwd, p);
}

function envPort(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env[CONFIG_ENV.port];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new TesseraError(
      'ERR_CONFIG',
      `${CONFIG_ENV.port}=${JSON.stringify(raw)} is not a port number; use 0-65535 (0 picks a free port)`,
    );
  }
  return n;
}

function envUrl(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  if (!url.safeParse(raw).success)
    throw new TesseraError(
      'ERR_CONFIG',
      `${name}=${JSON.stringify(withoutUserinfo(raw))} is not an http(s) URL; e.g. ${name}=http://127.0.0.1:4200`,
    );
  return raw;
}

function flagUrl(value: string | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  if (!url.safeParse(value).success)
    throw new TesseraError(
      'ERR_CONFIG',
      `${flag} ${JSON.stringify(withoutUserinfo(value))} is not an http(s) URL; e.g. ${flag} http://127.0.0.1:4200`,
    );
  return value;
}

const nonEmpty = (v: string | undefined) => (v === '' ? undefined : v);

/** `TESSERA_INTERNAL_URLS`: comma-separated http(s) URLs. */
function envUrls(env: NodeJS.ProcessEnv, name: string): string[] | undefined {
  const raw = nonEmpty(env[name]);
  if (raw === undefined) return undefined;
  const urls = raw
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  for (const u of urls) {
    if (!url.safeParse(u).success)
      throw new TesseraError(
        'ERR_CONFIG',
        `${name}: ${JSON.stringify(withoutUserinfo(u))} is not an http(s) URL; e.g. ${name}=http://tessera.tessera.svc:4200`,
      );
  }
  return urls.length > 0 ? urls : undefined;
}

/**
 * Resolves the CLI's settings: flags > environment (`TESSERA_*`) > config file
 * (`./tessera.config.yaml`, else `$TESSERA_HOME/config.yaml`) > defaults.
 * @throws ValidationError `ERR_CONFIG` naming file, line and key when the config file is invalid.
 */
export function resolveConfig(input: { flags?: ConfigFlags; env?: NodeJS.ProcessEnv; cwd?: string } = {}): CliConfig {
  const flags = input.flags ?? {};
  const env = input.env ?? process.env;
  const cwd = input.cwd ?? process.cwd();
  const homeBeforeFile = flags.home ?? nonEmpty(env[CONFIG_ENV.home]);
  const candidates = [join(cwd, PROJECT_CONFIG_FILE), join(expandHome(homeBeforeFile ?? '~/.tessera', cwd), 'config.yaml')];
  const configFile = candidates.find((f) => existsSync(f));
  const file = configFile ? validateYaml(readYamlSource(configFile, { cwd }), configFileSchema.nullable()) : null;

  const pick = <T>(...values: (T | undefined)[]): T | undefined => values.find((v) => v !== undefined);
  const config: CliConfig = {
    apiUrl: (pick(flagUrl(flags.apiUrl, '--api-url'), envUrl(env, CONFIG_ENV.apiUrl), file?.api_url) ?? DEFAULT_API_URL).replace(
      /\/+$/,
      '',
    ),
    home: expandHome(pick(homeBeforeFile, file?.home) ?? '~/.tessera', cwd),
  };
  const host = pick(flags.host, nonEmpty(env[CONFIG_ENV.host]), file?.host);
  const p = pick(flags.port, envPort(env), file?.port);
  const databaseUrl = pick(flags.databaseUrl, nonEmpty(env[CONFIG_ENV.databaseUrl]), file?.database_url);
  const publicUrl = pick(flagUrl(flags.publicUrl, '--public-url'), envUrl(env, CONFIG_ENV.publicUrl), file?.public_url);
  const internalUrls = pick(
    flags.internalUrls?.map((u) => flagUrl(u, '--internal-url') as string),
    envUrls(env, CONFIG_ENV.internalUrls),
    file?.internal_urls,
  );
  const logLevel = pick(flags.logLevel, nonEmpty(env[CONFIG_ENV.logLevel]), file?.log_level);
  if (host !== undefined) config.host = host;
  if (p !== undefined) config.port = p;
  if (databaseUrl !== undefined) config.databaseUrl = databaseUrl;
  if (publicUrl !== undefined) config.publicUrl = publicUrl;
  if (internalUrls !== undefined && internalUrls.length > 0) config.internalUrls = internalUrls;
  if (logLevel !== undefined) config.logLevel = logLevel;
  if (configFile !== undefined) config.configFile = configFile;
  const auth = configFile ? resolveAuthSection(file?.auth, env, configFile) : undefined;
  if (auth !== undefined) config.auth = auth;
  const trustProxy = envTrustProxy(env) ?? file?.trust_proxy;
  if (trustProxy !== undefined) config.trustProxy = trustProxy;
  return Object.freeze(config);
}

/** `TESSERA_TRUST_PROXY`: `true`/`false`, or comma-separated proxy addresses (CIDRs). */
function envTrustProxy(env: NodeJS.ProcessEnv): boolean | string[] | undefined {
  const raw = nonEmpty(env.TESSERA_TRUST_PROXY);
  if (raw === undefined) return undefined;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
