import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { TesseraError } from '@tessera/core';
import type { AuthOptions } from '@tessera/server';
import * as z from 'zod';
import { strictObject } from './project/schema.js';

/**
 * The `auth:` section of the server's config file (`tessera.config.yaml`): the identity providers
 * people log in at, their role rules, and session lifetimes. Secrets need not be in the file: a
 * provider's client secret is also read from `TESSERA_AUTH_<NAME>_CLIENT_SECRET` (which wins), or
 * from `client_secret_file`; a private key for `private_key_jwt` from `private_key_file` (a JWK).
 *
 * @example
 * auth:
 *   providers:
 *     - name: corp
 *       issuer: https://login.example.com
 *       client_id: tessera
 *       scopes: [openid, email, profile, groups]
 *       role_rules:
 *         - { role: developer, when: '"data-eng" in claims.groups' }
 *         - { role: viewer, when: 'claims.email.endsWith("@example.com")' }
 */

const duration = z.union([z.string().min(1), z.number().nonnegative()]);

const ruleSchema = strictObject(
  {
    role: z.enum(['viewer', 'operator', 'developer', 'admin']),
    workspace: z.string().min(1).optional(),
    when: z.string().min(1),
  },
  'a rule such as { role: developer, when: \'"data-eng" in claims.groups\' }',
);

const providerSchema = strictObject(
  {
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lowercase letters, digits, "-" and "_", e.g. "corp"'),
    issuer: z.url({ protocol: /^https?$/, error: 'expected the issuer URL, e.g. https://login.example.com' }),
    client_id: z.string().min(1),
    client_secret: z.string().min(1).optional(),
    client_secret_file: z.string().min(1).optional(),
    private_key_file: z.string().min(1).optional(),
    scopes: z.array(z.string().min(1)).optional(),
    userinfo: z.boolean().optional(),
    role_rules: z.array(ruleSchema).optional(),
  },
  'a provider such as { name: corp, issuer: https://login.example.com, client_id: tessera }',
);

/** Schema of the config file's `auth:` section. */
export const authFileSchema = strictObject(
  {
    providers: z.array(providerSchema).optional(),
    sessions: strictObject(
      {
        browser_lifetime: duration.optional(),
        browser_idle: duration.optional(),
        cli_lifetime: duration.optional(),
        access_token_lifetime: duration.optional(),
        login_timeout: duration.optional(),
      },
      'a mapping such as { browser_lifetime: 12h }',
    ).optional(),
  },
  'a mapping such as { providers: [...] }',
);

/** The parsed `auth:` section. */
export type AuthFileSection = z.infer<typeof authFileSchema>;

/** The environment variable holding a provider's client secret: `TESSERA_AUTH_<NAME>_CLIENT_SECRET`. */
export function clientSecretEnv(provider: string): string {
  return `TESSERA_AUTH_${provider.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_CLIENT_SECRET`;
}

function readSecretFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new TesseraError('ERR_CONFIG', `cannot read ${what} ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, {
      cause: e,
    });
  }
}

/**
 * Turns the `auth:` section into the server's auth options: file paths resolved against the config
 * file's directory, client secrets from the environment (which wins over the file).
 * @throws TesseraError `ERR_CONFIG` naming the provider and what is missing or unreadable.
 */
export function resolveAuthSection(
  section: AuthFileSection | undefined,
  env: NodeJS.ProcessEnv,
  configFile: string,
): AuthOptions | undefined {
  if (!section) return undefined;
  const dir = dirname(configFile);
  const out: AuthOptions = {};
  if (section.providers) {
    out.providers = section.providers.map((p, i) => {
      const where = `${configFile}: auth.providers[${i}] (${p.name})`;
      const fromEnv = env[clientSecretEnv(p.name)];
      const secret =
        fromEnv !== undefined && fromEnv !== ''
          ? fromEnv
          : p.client_secret_file
            ? readSecretFile(resolve(dir, p.client_secret_file), `the client secret file of ${where}:`)
            : p.client_secret;
      let privateKeyJwk: Record<string, unknown> | undefined;
      if (p.private_key_file) {
        const text = readSecretFile(resolve(dir, p.private_key_file), `the private key file of ${where}:`);
        try {
          privateKeyJwk = JSON.parse(text) as Record<string, unknown>;
        } catch (e) {
          throw new TesseraError('ERR_CONFIG', `${where}: private_key_file ${p.private_key_file} is not a JSON JWK`, { cause: e });
        }
      }
      if (!secret && !privateKeyJwk) {
        throw new TesseraError(
          'ERR_CONFIG',
          `${where}: no client credential; set ${clientSecretEnv(p.name)}, or client_secret_file, or private_key_file (private_key_jwt)`,
        );
      }
      return {
        name: p.name,
        issuer: p.issuer,
        clientId: p.client_id,
        ...(privateKeyJwk ? { privateKeyJwk } : { clientSecret: secret as string }),
        ...(p.scopes ? { scopes: p.scopes } : {}),
        ...(p.userinfo !== undefined ? { userinfo: p.userinfo } : {}),
        ...(p.role_rules ? { roleRules: p.role_rules } : {}),
      };
    });
  }
  if (section.sessions) {
    const s = section.sessions;
    out.sessions = {
      ...(s.browser_lifetime !== undefined ? { browserLifetime: s.browser_lifetime } : {}),
      ...(s.browser_idle !== undefined ? { browserIdle: s.browser_idle } : {}),
      ...(s.cli_lifetime !== undefined ? { cliLifetime: s.cli_lifetime } : {}),
      ...(s.access_token_lifetime !== undefined ? { accessTokenLifetime: s.access_token_lifetime } : {}),
      ...(s.login_timeout !== undefined ? { loginTimeout: s.login_timeout } : {}),
    };
  }
  return out;
}
