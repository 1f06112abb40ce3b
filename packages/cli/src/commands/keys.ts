import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { formatDuration, type SigningKeyInfo, type SigningKeyState, type TokenAlgorithm } from '@tessera/core';
import { type Command, InvalidArgumentError } from 'commander';
import type { CliContext } from '../context.js';
import { examples } from '../lib/options.js';
import type { Style } from '../lib/style.js';
import { renderTable } from '../lib/table.js';
import { formatTime, zoneName } from '../lib/time.js';

const ALGORITHMS: readonly TokenAlgorithm[] = ['RS256', 'ES256'];

function parseAlg(value: string, previous: TokenAlgorithm[] | undefined): TokenAlgorithm[] {
  const alg = value.toUpperCase() as TokenAlgorithm;
  if (!ALGORITHMS.includes(alg))
    throw new InvalidArgumentError(`--alg must be one of ${ALGORITHMS.join(', ')}, found ${JSON.stringify(value)}`);
  return [...(previous ?? []), alg];
}

function paintState(state: SigningKeyState, style: Style): string {
  if (state === 'active') return style.green(state);
  if (state === 'pending') return style.cyan(state);
  if (state === 'retired') return style.yellow(state);
  if (state === 'revoked') return style.red(state);
  return style.dim(state);
}

/** The `keys ls` table; times in `timeZone`, named once in the headers. */
export function formatKeysTable(keys: readonly SigningKeyInfo[], options: { style: Style; timeZone: string; now: Date }): string {
  const { style, timeZone } = options;
  if (keys.length === 0) return style.dim('no signing keys yet; they are made when the server starts');
  const zone = zoneName(timeZone, options.now);
  const t = (iso: string | null) => (iso ? formatTime(iso, timeZone, { date: true }) : style.dim('—'));
  const rows = keys.map((k) => [
    k.kid,
    k.alg,
    paintState(k.state, style),
    t(k.createdAt),
    t(k.activatesAt),
    k.revokedAt ? style.red(`revoked ${formatTime(k.revokedAt, timeZone, { date: true })}`) : t(k.retiredAt),
    k.expiresAt ? t(k.expiresAt) : k.retiredAt ? style.dim('last token + leeway') : style.dim('—'),
    String(k.tokensIssued),
  ]);
  return renderTable(
    ['KID', 'ALG', 'STATE', `CREATED (${zone})`, `ACTIVATES (${zone})`, `RETIRES (${zone})`, `EXPIRES (${zone})`, 'TOKENS'],
    rows,
    style,
  );
}

/** `tessera keys …`: the issuer's signing keys (docs/keys.md). */
export function registerKeyCommands(program: Command, ctx: () => CliContext): void {
  const keys = program
    .command('keys')
    .description("the issuer's signing keys: list, rotate, publish for a static site")
    .addHelpText(
      'after',
      examples(
        ['tessera keys ls'],
        ['tessera keys rotate'],
        ['tessera keys rotate --revoke-current', 'a key leaked'],
        ['tessera keys publish --out site'],
      ),
    );

  keys
    .command('ls')
    .alias('list')
    .description('list signing keys and their states: pending → active → retired → expired (or revoked)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      const res = await c.client().listSigningKeys();
      if (opts.json) return c.json(res);
      const now = new Date(res.now);
      c.out(formatKeysTable(res.items, { style: c.style, timeZone: c.timeZone, now }));
      const s = res.settings;
      const next = Object.entries(res.nextRotationAt)
        .filter(([, at]) => at)
        .map(([alg, at]) => `${alg} ${formatTime(at as string, c.timeZone, { date: true })}`)
        .join(', ');
      c.out(
        c.style.dim(
          `\npre-publication ${formatDuration(s.prePublishMs)} · rotation ${s.rotationIntervalMs > 0 ? `every ${formatDays(s.rotationIntervalMs)}${next ? ` (next: ${next} ${zoneName(c.timeZone, now)})` : ''}` : 'on demand only'} · leeway after last token ${formatDuration(s.expiryLeewayMs)} · private keys ${s.keyFile ? 'in the key file' : 'in memory only'}`,
        ),
      );
    });

  keys
    .command('rotate')
    .description('rotate now: the new key is published at once and signs after the pre-publication delay')
    .option(
      '--revoke-current',
      'emergency (a leaked key): the new key signs now and the current key leaves the JWKS now; its tokens stop verifying',
    )
    .option('--alg <alg>', 'rotate only this algorithm (RS256 or ES256; repeatable)', parseAlg)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Relying parties that cached the JWKS keep a revoked key until their cache expires (the JWKS is
served with max-age=300). After a rotation, run \`tessera keys publish\` again if you publish the
keys on a static site.
${examples(['tessera keys rotate'], ['tessera keys rotate --alg ES256'], ['tessera keys rotate --revoke-current'])}`,
    )
    .action(async (opts: { revokeCurrent?: boolean; alg?: TokenAlgorithm[]; json?: boolean }) => {
      const c = ctx();
      const res = await c.client().rotateSigningKeys({
        ...(opts.revokeCurrent ? { revokeCurrent: true } : {}),
        ...(opts.alg ? { algorithms: opts.alg } : {}),
      });
      if (opts.json) return c.json(res);
      const s = c.style;
      const when = (iso: string) => `${formatTime(iso, c.timeZone, { date: true })} ${zoneName(c.timeZone, iso)}`;
      for (const k of res.created) {
        c.out(
          `${s.green('✓')} new ${k.alg} key ${s.bold(k.kid)}: published now, ${k.state === 'active' ? 'signing now' : `signs from ${when(k.activatesAt)}`}`,
        );
      }
      for (const k of res.superseded) c.out(s.dim(`  pending key ${k.kid} (${k.alg}) replaced before it ever signed`));
      for (const k of res.revoked) {
        c.out(
          `${s.red('✗')} revoked ${k.alg} key ${s.bold(k.kid)}: removed from the JWKS; the ${k.tokensIssued} token(s) it signed no longer verify`,
        );
      }
      if (res.revoked.length > 0) {
        c.err(
          s.yellow('  caches: relying parties that fetched the JWKS in the last 5 minutes may still accept its tokens until they refetch'),
        );
      }
      c.out(s.dim('  static site? run `tessera keys publish --out DIR` and upload it now'));
    });

  keys
    .command('publish')
    .description('write .well-known/openid-configuration and .well-known/jwks.json for a static site (a public bucket)')
    .requiredOption('--out <dir>', 'directory to write into (its .well-known/ is created)')
    .option('--issuer <url>', "the site's URL, which must be the server's issuer (--public-url) so tokens name it")
    .option(
      '--cache-max-age <duration>',
      "how long the site's caches (CDN, the bucket's Cache-Control) may keep the files; checked against when pending keys sign",
      '5m',
    )
    .option('--json', 'print what was written as JSON')
    .addHelpText(
      'after',
      `
Upload DIR so that <issuer>/.well-known/openid-configuration is served. The JWKS includes pending
keys (published before they sign) and retired keys whose tokens may still be valid. Publish again
after every rotation, before the new key starts signing (docs/keys.md).
GCP without a public issuer: gcloud iam workload-identity-pools providers create-oidc … --jwk-json-path DIR/.well-known/jwks.json
${examples(
  ['tessera keys publish --out site --issuer https://tessera-oidc.s3.amazonaws.com'],
  ['tessera keys publish --out site && aws s3 sync site s3://tessera-oidc --content-type application/json --cache-control max-age=300'],
)}`,
    )
    .action(async (opts: { out: string; issuer?: string; cacheMaxAge: string; json?: boolean }) => {
      const c = ctx();
      const pub = await c.client().getKeyPublication({ ...(opts.issuer ? { issuer: opts.issuer } : {}), cacheMaxAge: opts.cacheMaxAge });
      if (pub.issuer !== pub.serverIssuer) {
        c.err(
          `${c.errStyle.yellow('warning')} the server's issuer is ${pub.serverIssuer}, but these files name ${pub.issuer}: its tokens' iss will not match and relying parties will refuse them. Start the server with --public-url ${pub.issuer}`,
        );
      }
      const dir = join(resolve(c.io.cwd, opts.out), '.well-known');
      await mkdir(dir, { recursive: true });
      const files = { openidConfiguration: join(dir, 'openid-configuration'), jwks: join(dir, 'jwks.json') };
      await writeFile(files.openidConfiguration, `${JSON.stringify(pub.openidConfiguration, null, 2)}\n`);
      await writeFile(files.jwks, `${JSON.stringify(pub.jwks, null, 2)}\n`);
      for (const w of pub.warnings) c.err(`${c.errStyle.yellow('warning')} ${w}`);
      if (opts.json) return c.json({ ...pub, files });
      c.out(`${c.style.green('✓')} wrote ${files.openidConfiguration}`);
      c.out(`${c.style.green('✓')} wrote ${files.jwks} (${pub.jwks.keys.length} keys)`);
      c.out(c.style.dim(`  serve them at ${pub.issuer.replace(/\/+$/, '')}/.well-known/ (content-type application/json)`));
      if (pub.republishBy) {
        c.out(
          c.style.dim(
            `  next scheduled rotation ${formatTime(pub.nextRotationAt as string, c.timeZone, { date: true })}; publish again after it and before ${formatTime(pub.republishBy, c.timeZone, { date: true })} ${zoneName(c.timeZone, pub.republishBy)}`,
          ),
        );
      }
    });
}

function formatDays(ms: number): string {
  return ms % 86_400_000 === 0 ? `${ms / 86_400_000} d` : formatDuration(ms);
}
