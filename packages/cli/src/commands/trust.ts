import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { TesseraError } from '@tessera/core';
import {
  type ExplainTarget,
  type GenerateTrustOptions,
  generateTrustConfig,
  LINT_RULES,
  type LintFinding,
  lintTrustConfig,
} from '@tessera/verify';
import { type Command, InvalidArgumentError } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT } from '../lib/exit.js';
import { examples } from '../lib/options.js';
import type { Style } from '../lib/style.js';
import { parseTarget, readTrustFile, serverDiscovery, subjectOf, TARGET_CONFIGS, TARGET_NAMES } from './token.js';

const GENERATE_TARGETS = ['aws', 'gcp', 'azure', 'vault'] as const;

function parseGenerateTarget(value: string): (typeof GENERATE_TARGETS)[number] {
  const v = value.toLowerCase();
  if ((GENERATE_TARGETS as readonly string[]).includes(v)) return v as (typeof GENERATE_TARGETS)[number];
  throw new InvalidArgumentError(`--target must be one of ${GENERATE_TARGETS.join(', ')}, found ${JSON.stringify(value)}`);
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

interface GenerateFlags {
  deployment: string;
  target: (typeof GENERATE_TARGETS)[number];
  audience?: string;
  out?: string;
  json?: boolean;
  accountId?: string;
  roleName?: string;
  partition?: string;
  projectNumber?: string;
  pool?: string;
  provider?: string;
  serviceAccount?: string;
  name?: string;
  clientId?: string;
  identityName?: string;
  resourceGroup?: string;
  role?: string;
  mount?: string;
  policy?: string[];
}

const SEVERITY_SYMBOL = { error: '✗', warning: '!', info: '·' } as const;

/** Lint findings, errors first: `✗ error  id  message` with the fix under it. */
export function formatFindings(findings: readonly LintFinding[], style: Style): string {
  const paint = (f: LintFinding, s: string) =>
    f.severity === 'error' ? style.red(s) : f.severity === 'warning' ? style.yellow(s) : style.dim(s);
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`  ${paint(f, `${SEVERITY_SYMBOL[f.severity]} ${f.severity.padEnd(7)}`)} ${style.bold(f.id)}  ${f.message}`);
    lines.push(`              ${style.dim(`${f.path ? `at ${f.path} · ` : ''}fix: ${f.fix}`)}`);
  }
  return lines.join('\n');
}

/** `tessera trust …`: write and check relying parties' configurations for a deployment's tokens. */
export function registerTrustCommands(program: Command, ctx: () => CliContext, setExitCode: (code: number) => void): void {
  const trust = program
    .command('trust')
    .description("write and check the configuration AWS, GCP, Azure or Vault needs to trust one deployment's identity tokens")
    .addHelpText(
      'after',
      examples(
        ['tessera trust generate --deployment nightly-etl --target aws --account-id 123456789012 --out role-trust.json'],
        ['tessera trust generate --deployment nightly-etl --target gcp --project-number 123456789 --pool tessera --provider tessera'],
        ['tessera trust lint role-trust.json'],
      ),
    );

  trust
    .command('generate')
    .description(
      'write a tightly pinned configuration for one deployment (issuer, one audience, sub — and deployment_id where the relying party can see it) and the commands to apply it',
    )
    .requiredOption('-d, --deployment <name>', 'the deployment whose tokens to trust')
    .requiredOption('-t, --target <target>', 'aws, gcp, azure or vault', parseGenerateTarget)
    .option(
      '--audience <aud>',
      "the audience to trust (default: sts.amazonaws.com, the GCP provider name, api://AzureADTokenExchange; for vault, the deployment's own)",
    )
    .option('-o, --out <file>', 'write the configuration to this file (default: print it)')
    .option('--json', 'print {config, audience, commands, notes} as JSON')
    .option('--account-id <id>', 'aws: the 12-digit account holding the OIDC provider')
    .option('--role-name <name>', 'aws: the role name in the commands')
    .option('--partition <p>', 'aws: aws, aws-cn or aws-us-gov', 'aws')
    .option('--project-number <n>', 'gcp: the project number (not the id)')
    .option('--pool <id>', 'gcp: workload identity pool id', 'tessera')
    .option('--provider <id>', 'gcp: provider id', 'tessera')
    .option('--service-account <email>', 'gcp: a service account to let the deployment impersonate')
    .option('--name <name>', 'azure: the federated credential name')
    .option('--client-id <id>', 'azure: the app registration (client) id, for the commands')
    .option('--identity-name <name>', 'azure: the user-assigned managed identity, for the commands')
    .option('--resource-group <rg>', 'azure: its resource group, for the commands')
    .option('--role <name>', 'vault: the role name')
    .option('--mount <path>', 'vault: the JWT auth mount path', 'jwt')
    .option('--policy <name>', 'vault: a token policy (repeatable)', collect)
    .addHelpText(
      'after',
      examples(
        ['tessera trust generate -d nightly-etl -t aws --account-id 123456789012 -o role-trust.json'],
        [
          'tessera trust generate -d nightly-etl -t gcp --project-number 123456789 --service-account etl@proj.iam.gserviceaccount.com -o provider.json',
        ],
        ['tessera trust generate -d nightly-etl -t azure --client-id 0000… -o credential.json'],
        ['tessera trust generate -d nightly-etl -t vault --audience vault.internal --policy etl-read -o vault-role.json'],
      ),
    )
    .action(async (opts: GenerateFlags) => {
      const c = ctx();
      const client = c.client();
      const d = await client.getDeployment(opts.deployment);
      const { issuer } = await serverDiscovery(client);
      const subject = await subjectOf(client, d);
      const options: GenerateTrustOptions = {
        target: opts.target,
        issuer,
        subject,
        deployment: {
          name: d.name,
          id: d.id,
          environment: d.environment ?? 'dev',
          audiences: d.identity?.audiences ?? [],
          ...(d.identity?.algorithm ? { algorithm: d.identity.algorithm } : {}),
          ...(d.identity?.awsSessionTags ? { awsSessionTags: true } : {}),
        },
        ...(opts.audience ? { audience: opts.audience } : {}),
        file: opts.out ?? 'trust.json',
        aws: {
          ...(opts.accountId ? { accountId: opts.accountId } : {}),
          ...(opts.roleName ? { roleName: opts.roleName } : {}),
          ...(opts.partition ? { partition: opts.partition } : {}),
        },
        gcp: {
          ...(opts.projectNumber ? { projectNumber: opts.projectNumber } : {}),
          ...(opts.pool ? { pool: opts.pool } : {}),
          ...(opts.provider ? { provider: opts.provider } : {}),
          ...(opts.serviceAccount ? { serviceAccount: opts.serviceAccount } : {}),
        },
        azure: {
          ...(opts.name ? { name: opts.name } : {}),
          ...(opts.clientId ? { clientId: opts.clientId } : {}),
          ...(opts.identityName ? { identityName: opts.identityName } : {}),
          ...(opts.resourceGroup ? { resourceGroup: opts.resourceGroup } : {}),
        },
        vault: {
          ...(opts.role ? { role: opts.role } : {}),
          ...(opts.mount ? { mount: opts.mount } : {}),
          ...(opts.policy ? { policies: opts.policy } : {}),
        },
      };
      const g = generateTrustConfig(options);
      const text = `${JSON.stringify(g.config, null, 2)}\n`;
      if (opts.out) {
        try {
          writeFileSync(opts.out, text);
        } catch (e) {
          throw new TesseraError('ERR_CONFIG', `cannot write ${opts.out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
            cause: e,
          });
        }
      }
      if (opts.json)
        return c.json({
          target: g.target,
          audience: g.audience,
          subject,
          issuer,
          config: g.config,
          commands: g.commands,
          notes: g.notes,
          ...(opts.out ? { file: opts.out } : {}),
        });
      const s = c.style;
      // Without --out the configuration is the output (stdout); everything else goes to stderr.
      const say = opts.out ? (line: string) => c.out(line) : (line: string) => c.err(line);
      if (opts.out)
        say(
          `${s.green('✓')} wrote ${s.bold(opts.out)}: ${TARGET_NAMES[g.target]} ${TARGET_CONFIGS[g.target]} for deployment ${s.bold(d.name)} (${d.environment ?? 'dev'})`,
        );
      else c.io.stdout.write(text);
      say(
        `  trusts   iss ${issuer} · aud ${g.audience} · sub ${subject}${g.target === 'gcp' || g.target === 'vault' ? ` · deployment_id ${d.id}` : ''}`,
      );
      for (const n of g.notes) say(`  ${s.yellow('!')} ${n}`);
      if (!opts.out) say(s.dim('  save it with -o trust.json: the commands below read that file'));
      say('  apply:');
      for (const cmd of g.commands) say(`    ${cmd.startsWith('#') ? s.dim(cmd) : cmd.replace(/\n/g, '\n    ')}`);
      const file = opts.out ?? 'trust.json';
      say(
        s.dim(
          `  check:   tessera trust lint ${file}   ·   tessera token explain --run RUN --audience ${g.audience.includes(' ') ? JSON.stringify(g.audience) : g.audience} --config ${file}`,
        ),
      );
    });

  trust
    .command('lint')
    .description(
      'flag what in a configuration lets other pipelines in (or keeps this one out): each finding has a stable id, a severity and a fix',
    )
    .argument(
      '<file>',
      'AWS trust policy, GCP provider (gcloud … describe --format=json), Azure federated credential(s), or Vault {config, role}',
    )
    .option('--target <target>', 'aws, gcp, azure, vault, generic or auto', parseTarget(true), 'auto')
    .option('--issuer <url>', "the Tessera issuer to compare with (default: the configured server's, when reachable)")
    .option('--json', 'print the findings as JSON')
    .addHelpText(
      'after',
      `${examples(['tessera trust lint role-trust.json'], ['tessera trust lint provider.json --target gcp --json'])}
Finding ids: ${Object.keys(LINT_RULES).join(', ')}
Exit status: 0 no errors (warnings and notes allowed) · 1 at least one error · 2 the file cannot be read`,
    )
    .action(async (file: string, opts: { target: ExplainTarget | 'auto'; issuer?: string; json?: boolean }) => {
      const c = ctx();
      const { trust: parsed, source } = readTrustFile(file, opts.target);
      let issuer = opts.issuer;
      let issuerFrom = issuer ? '--issuer' : '';
      if (!issuer) {
        const client = c.client();
        const doc = await Promise.race([
          serverDiscovery(client).catch(() => undefined),
          new Promise<undefined>((r) => setTimeout(() => r(undefined), 2000).unref()),
        ]);
        if (doc) {
          issuer = doc.issuer;
          issuerFrom = client.baseUrl;
        }
      }
      const findings = lintTrustConfig(parsed, { ...(issuer ? { issuer } : {}), source });
      const errors = findings.filter((f) => f.severity === 'error').length;
      setExitCode(errors > 0 ? EXIT.failure : EXIT.ok);
      if (opts.json) return c.json({ file, target: parsed.target, issuer: issuer ?? null, findings });
      const s = c.style;
      const warnings = findings.filter((f) => f.severity === 'warning').length;
      const infos = findings.length - errors - warnings;
      const counts = [
        errors ? s.red(`${errors} error${errors > 1 ? 's' : ''}`) : '',
        warnings ? s.yellow(`${warnings} warning${warnings > 1 ? 's' : ''}`) : '',
        infos ? `${infos} note${infos > 1 ? 's' : ''}` : '',
      ]
        .filter(Boolean)
        .join(', ');
      c.out(
        `${s.bold(basename(file))}: ${TARGET_NAMES[parsed.target]} ${TARGET_CONFIGS[parsed.target]} · ${findings.length ? counts : s.green('no findings')}`,
      );
      if (issuer) c.out(s.dim(`  issuer compared with ${issuer} (from ${issuerFrom})`));
      if (findings.length) c.out(formatFindings(findings, s));
      if (errors === 0) c.out(s.green(`✓ nothing lets another deployment or tenant in${findings.length ? ' (see the notes above)' : ''}`));
    });
}
