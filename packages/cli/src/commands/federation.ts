import type { PutTrustPolicyRequest, TrustPolicy } from '@tessera/core';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { CliContext } from '../context.js';
import { UsageError } from '../lib/exit.js';
import { exchangeTokenFile, FEDERATED_TOKEN_FILE_ENV } from '../lib/federation.js';
import { examples } from '../lib/options.js';
import type { Style } from '../lib/style.js';
import { renderTable } from '../lib/table.js';

/** GitHub Actions' OIDC issuer. */
export const GITHUB_ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';
const ROLES = ['viewer', 'operator', 'developer', 'admin', 'worker'] as const;

function parseRole(value: string): PutTrustPolicyRequest['role'] {
  if (!(ROLES as readonly string[]).includes(value))
    throw new InvalidArgumentError(`must be one of ${ROLES.join(', ')}, found ${JSON.stringify(value)}`);
  return value as PutTrustPolicyRequest['role'];
}

/** The `federation ls` table. */
export function formatTrustPolicies(items: readonly TrustPolicy[], style: Style): string {
  if (items.length === 0) return style.dim('no trust policies: add one with `tessera federation set <name> …`');
  return renderTable(
    ['NAME', 'ROLE', 'ISSUER', 'AUDIENCE', 'SUBJECT / CONDITION'],
    items.map((p) => [
      p.name,
      p.role === 'worker' ? `worker${p.pool ? ` (pool ${p.pool})` : ''}` : `${p.role}${p.workspace ? ` (workspace ${p.workspace})` : ''}`,
      p.issuer,
      p.audience,
      [p.subject ? `sub ~ ${p.subject}` : '', p.condition ? `if ${p.condition}` : ''].filter(Boolean).join('  '),
    ]),
    style,
  );
}

interface SetFlags {
  issuer?: string;
  audience?: string;
  subject?: string;
  condition?: string;
  role?: PutTrustPolicyRequest['role'];
  workspace?: string;
  pool?: string;
  description?: string;
  github?: string;
  ref?: string;
  json?: boolean;
}

/** `tessera federation …`: trust policies that let CI and workers exchange their platform tokens (RFC 8693). */
export function registerFederationCommands(program: Command, ctx: () => CliContext): void {
  const fed = program
    .command('federation')
    .description(
      'trust policies: which platform tokens (GitHub Actions, GitLab, Kubernetes…) may be exchanged for Tessera access, with what role',
    )
    .addHelpText(
      'after',
      examples(
        ['tessera federation set etl-ci --github acme/etl --audience tessera --role developer', 'CI of acme/etl on main may deploy'],
        ['tessera federation ls'],
        ['tessera federation exchange --token-file token.jwt', 'what would this token get?'],
      ),
    );

  fed
    .command('ls')
    .alias('list')
    .description('list trust policies (admin)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      const { items } = await c.client().request<{ items: TrustPolicy[] }>('GET', '/api/trust-policies');
      if (opts.json) return c.json(items);
      c.out(formatTrustPolicies(items, c.style));
    });

  fed
    .command('set')
    .description('create or replace a trust policy (admin); tokens it granted before are refused and must be exchanged again')
    .argument('<name>', 'policy name (a-z 0-9 . _ -)')
    .option('--issuer <url>', "the platform's OIDC issuer, exactly as its tokens' iss")
    .option('--audience <aud>', 'the audience the token must carry (set it in the CI job that requests the token)')
    .option('--subject <glob>', 'glob over the token sub: * any run of characters, ? one')
    .option('--condition <cel>', 'CEL over claims, e.g. claims.repository == "acme/etl" && claims.ref == "refs/heads/main"')
    .addOption(new Option('--role <role>', 'what the token gets').argParser(parseRole).makeOptionMandatory())
    .option('--workspace <name>', 'confine the role to one workspace')
    .option('--pool <name>', 'role worker: the only pool it may poll')
    .option('--description <text>', 'what the policy is for')
    .option('--github <owner/repo>', `preset: issuer ${GITHUB_ACTIONS_ISSUER}, subject repo:<owner/repo>:ref:<ref>`)
    .option('--ref <ref>', 'with --github: the git ref (default refs/heads/main)')
    .option('--json', 'print the policy as JSON')
    .addHelpText(
      'after',
      examples(
        ['tessera federation set etl-ci --github acme/etl --audience tessera --role developer'],
        [
          'tessera federation set k8s-workers --issuer https://oidc.eks.eu-west-1.amazonaws.com/id/ABC --audience tessera --subject "system:serviceaccount:tessera:*" --role worker --pool k8s',
        ],
        [
          `tessera federation set gl --issuer https://gitlab.com --audience tessera --condition 'claims.project_path == "acme/etl" && claims.ref_protected == "true"' --role operator`,
        ],
      ),
    )
    .action(async (name: string, opts: SetFlags) => {
      const c = ctx();
      if (opts.ref && !opts.github) throw new UsageError('--ref goes with --github');
      const issuer = opts.issuer ?? (opts.github ? GITHUB_ACTIONS_ISSUER : undefined);
      const subject = opts.subject ?? (opts.github ? `repo:${opts.github}:ref:${opts.ref ?? 'refs/heads/main'}` : undefined);
      if (!issuer) throw new UsageError('--issuer is required (or --github <owner/repo>)');
      if (!opts.audience) throw new UsageError('--audience is required: the aud your CI job asks its token for');
      const body: PutTrustPolicyRequest = {
        issuer,
        audience: opts.audience,
        role: opts.role as PutTrustPolicyRequest['role'],
        ...(subject ? { subject } : {}),
        ...(opts.condition ? { condition: opts.condition } : {}),
        ...(opts.workspace ? { workspace: opts.workspace } : {}),
        ...(opts.pool ? { pool: opts.pool } : {}),
        ...(opts.description ? { description: opts.description } : {}),
      };
      const policy = await c.client().request<TrustPolicy>('PUT', `/api/trust-policies/${encodeURIComponent(name)}`, { body });
      if (opts.json) return c.json(policy);
      c.out(
        `${c.style.green('✓')} trust policy ${c.style.bold(policy.name)} (version ${policy.version}): ${policy.issuer} → ${policy.role}`,
      );
      c.out(c.style.dim(`  CI: tessera deploy --token-file <file with the platform token>   (or ${FEDERATED_TOKEN_FILE_ENV}=<file>)`));
    });

  fed
    .command('show')
    .description('show a trust policy (admin)')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const c = ctx();
      const p = await c.client().request<TrustPolicy>('GET', `/api/trust-policies/${encodeURIComponent(name)}`);
      if (opts.json) return c.json(p);
      const by = (x: TrustPolicy['createdBy']) => `${x.kind} ${x.label ?? x.id}`;
      for (const [k, v] of [
        ['name', p.name],
        ['issuer', p.issuer],
        ['audience', p.audience],
        ['subject', p.subject ?? '—'],
        ['condition', p.condition ?? '—'],
        ['role', p.role],
        ['workspace', p.workspace ?? 'every workspace'],
        ['pool', p.pool ?? '—'],
        ['version', String(p.version)],
        ['created', `${p.createdAt} by ${by(p.createdBy)}`],
        ['updated', `${p.updatedAt} by ${by(p.updatedBy)}`],
      ] as const) {
        c.out(`${c.style.dim(k.padEnd(10))} ${v}`);
      }
    });

  fed
    .command('rm')
    .alias('delete')
    .description('delete a trust policy (admin): access tokens it granted are refused at once')
    .argument('<name>')
    .action(async (name: string) => {
      const c = ctx();
      await c.client().request('DELETE', `/api/trust-policies/${encodeURIComponent(name)}`);
      c.out(`${c.style.green('✓')} deleted trust policy ${c.style.bold(name)}`);
    });

  fed
    .command('exchange')
    .description(
      'exchange a platform token for a Tessera access token and say who it makes you (the token is printed only with --print-token)',
    )
    .option('--token-file <path>', `file holding the platform token (env ${FEDERATED_TOKEN_FILE_ENV})`)
    .option('--print-token', 'print the access token itself on stdout (for scripts; it is a secret)')
    .option('--json', 'print the principal as JSON')
    .action(async (opts: { tokenFile?: string; printToken?: boolean; json?: boolean }) => {
      const c = ctx();
      const file = opts.tokenFile ?? (c.io.env[FEDERATED_TOKEN_FILE_ENV] || undefined);
      if (!file) throw new UsageError(`--token-file is required (or set ${FEDERATED_TOKEN_FILE_ENV})`);
      const answer = await exchangeTokenFile(c.config().apiUrl, file);
      if (opts.printToken) return c.out(answer.access_token);
      if (opts.json) return c.json({ principal: answer.principal, expiresIn: answer.expires_in });
      const p = answer.principal;
      const roles = p?.grants?.map((g) => (g.workspace ? `${g.role} (workspace ${g.workspace})` : g.role)).join(', ');
      c.out(
        `${c.style.green('✓')} ${p?.kind ?? 'principal'} ${c.style.bold(p?.label ?? '?')}${roles ? `: ${roles}` : p?.pool ? `: worker of pool ${p.pool}` : ''}`,
      );
      c.out(c.style.dim(`  access token valid for ${Math.round(answer.expires_in / 60)} min (not printed; add --print-token)`));
    });
}
