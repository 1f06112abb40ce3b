import { existsSync, readFileSync } from 'node:fs';
import { type ApiClient, type Deployment, formatDuration, isTerminal, type StateType, TesseraError } from '@tessera/core';
import { DEFAULT_SUB_TEMPLATE, renderSubject } from '@tessera/identity';
import {
  checkSignature,
  createVerifier,
  type DecodedToken,
  decodeToken,
  EXPLAIN_TARGETS,
  type ExplainCheck,
  type ExplainResult,
  type ExplainTarget,
  explainToken,
  parseTrustConfig,
  type TrustConfig,
  type VerifierAlgorithm,
  verdictOf,
} from '@tessera/verify';
import { type Command, InvalidArgumentError } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT, UsageError } from '../lib/exit.js';
import { examples } from '../lib/options.js';
import type { Style } from '../lib/style.js';
import { formatAgo, formatTimestamp } from '../lib/time.js';

/** How each relying party is named in sentences. */
export const TARGET_NAMES: Record<ExplainTarget, string> = {
  generic: 'the service',
  aws: 'AWS',
  gcp: 'Google Cloud',
  azure: 'Microsoft Entra',
  vault: 'Vault',
};

/** What each target's configuration file is, for headings. */
export const TARGET_CONFIGS: Record<ExplainTarget, string> = {
  generic: 'verifier settings',
  aws: 'role trust policy',
  gcp: 'workload identity provider',
  azure: 'federated identity credential',
  vault: 'JWT auth role',
};

/** Commander parser for `--target`. */
export function parseTarget(auto: boolean) {
  return (value: string): ExplainTarget | 'auto' => {
    const v = value.toLowerCase();
    if (auto && v === 'auto') return 'auto';
    if ((EXPLAIN_TARGETS as readonly string[]).includes(v)) return v as ExplainTarget;
    throw new InvalidArgumentError(
      `--target must be one of ${[...EXPLAIN_TARGETS, ...(auto ? ['auto'] : [])].join(', ')}, found ${JSON.stringify(value)}`,
    );
  };
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Reads a token given as the argument itself, `-` (standard input), or a file path (a token file
 * projected for cloud SDKs). Never echoes it back.
 */
export async function readTokenArgument(arg: string | undefined): Promise<string> {
  let text: string;
  if (arg === undefined || arg === '-') {
    if (arg === undefined && process.stdin.isTTY) throw new UsageError('give a token, a token file, or - to read it from standard input');
    text = await readStdin();
  } else if (JWT_SHAPE.test(arg.trim())) {
    text = arg;
  } else if (existsSync(arg)) {
    text = readFileSync(arg, 'utf8');
  } else {
    throw new UsageError(
      `${arg.length > 40 ? `${arg.slice(0, 12)}…` : JSON.stringify(arg)} is neither a token (header.payload.signature) nor a file`,
    );
  }
  const token = text.trim();
  if (!JWT_SHAPE.test(token)) throw new UsageError('the input is not a compact JWT (three base64url parts separated by dots)');
  return token;
}

/** Reads and parses a relying party's configuration file. */
export function readTrustFile(file: string, target: ExplainTarget | 'auto'): { trust: TrustConfig; source: string } {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (e) {
    throw new TesseraError('ERR_CONFIG', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(source);
  } catch (e) {
    throw new TesseraError('ERR_CONFIG', `${file}: not JSON (${(e as Error).message})`);
  }
  try {
    return { trust: parseTrustConfig(raw, target, { source }), source };
  } catch (e) {
    if (e instanceof TesseraError) throw new TesseraError(e.code, `${file}: ${e.message}`, { cause: e });
    throw e;
  }
}

/** The last characters of a token, to recognise it without printing it. */
function tail(token: string): string {
  return `…${token.slice(-6)}`;
}

function symbol(c: ExplainCheck, style: Style): string {
  if (!c.ok) return style.red('✗');
  if (c.flag === 'warning') return style.yellow('!');
  if (c.flag === 'unknown') return style.yellow('?');
  return style.green('✓');
}

/** Check-by-check lines: `✓ message`, `✗ message` with its detail indented under it. */
export function formatChecks(checks: readonly ExplainCheck[], style: Style): string {
  const lines: string[] = [];
  for (const c of checks) {
    lines.push(`  ${symbol(c, style)} ${c.ok && !c.flag ? c.message : style.bold(c.message)}`);
    if (c.detail && (!c.ok || c.flag)) lines.push(`      ${style.dim(c.detail)}`);
  }
  return lines.join('\n');
}

/** The closing line of an explanation: accepted, or what the relying party would answer. */
export function formatVerdict(result: ExplainResult, style: Style, what: string): string {
  const who = TARGET_NAMES[result.target];
  if (result.verdict === 'accepted') return style.green(`✓ accepted by ${who} (${what})`);
  if (result.verdict === 'indeterminate')
    return style.yellow(`? ${who} would accept it as far as simulated; the checks marked ? were not (see above)`);
  const answer = result.answer ? `${who} would answer: ${result.answer}` : `refused by ${who}`;
  return style.red(`→ ${answer}`);
}

function describeToken(t: DecodedToken): string {
  const c = t.claims;
  const exp = typeof c.exp === 'number' ? c.exp : undefined;
  const left =
    exp === undefined
      ? 'no exp'
      : exp * 1000 >= Date.now()
        ? `exp in ${formatDuration(exp * 1000 - Date.now())}`
        : `expired ${formatDuration(Date.now() - exp * 1000)} ago`;
  return `sub ${JSON.stringify(c.sub)} · aud ${JSON.stringify(c.aud)} · ${left} · ${String(t.header.alg)}`;
}

async function fetchJson(url: string, timeoutMs = 3000): Promise<unknown> {
  const res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`HTTP ${res.status} from ${url}`);
  return res.json();
}

/** The issuer's discovery document, as the configured Tessera server serves it. */
export async function serverDiscovery(client: ApiClient): Promise<{ issuer: string; jwks_uri?: string }> {
  const doc = await client.request<{ issuer?: unknown; jwks_uri?: unknown }>('GET', '/.well-known/openid-configuration');
  if (typeof doc?.issuer !== 'string')
    throw new TesseraError('ERR_HTTP', `${client.baseUrl}/.well-known/openid-configuration has no issuer`);
  return { issuer: doc.issuer, ...(typeof doc.jwks_uri === 'string' ? { jwks_uri: doc.jwks_uri } : {}) };
}

/**
 * The token's signature check. Keys come from the configured Tessera server when it is the token's
 * issuer (its public URL may not be reachable from here), else from the issuer's discovery document.
 */
async function signatureCheck(token: string, iss: unknown, client: ApiClient): Promise<ExplainCheck> {
  let jwks: unknown;
  let where = '';
  try {
    const local = await serverDiscovery(client).catch(() => undefined);
    if (local && local.issuer === iss) {
      where = `${client.baseUrl}/.well-known/jwks.json`;
      jwks = await fetchJson(where);
    } else if (typeof iss === 'string' && /^https?:\/\//.test(iss)) {
      const doc = (await fetchJson(`${iss.replace(/\/+$/, '')}/.well-known/openid-configuration`)) as { jwks_uri?: unknown };
      if (typeof doc.jwks_uri !== 'string') throw new Error('the discovery document has no jwks_uri');
      where = doc.jwks_uri;
      jwks = await fetchJson(where);
    } else {
      throw new Error('iss is not a URL');
    }
  } catch (e) {
    return {
      id: 'signature',
      ok: true,
      flag: 'warning',
      message: `signature: not checked (cannot fetch the issuer's keys: ${(e as Error).message})`,
      detail: 'the relying party fetches them from the issuer; point --api-url at the issuing server, or pass --offline to skip this',
    };
  }
  return checkSignature(token, jwks);
}

/** Subject template keys for a deployment: its own, else the workspace's, else the default. */
export async function subTemplateOf(client: ApiClient, d: Deployment): Promise<readonly string[]> {
  if (d.identity?.subTemplate?.length) return d.identity.subTemplate;
  try {
    const ws = await client.getWorkspaceIdentity();
    if (ws.subTemplate?.length) return ws.subTemplate;
  } catch {
    // An older server: the default template.
  }
  return DEFAULT_SUB_TEMPLATE;
}

/** `sub` exactly as the issuer renders it for a deployment's runs. */
export async function subjectOf(client: ApiClient, d: Deployment): Promise<string> {
  const keys = (await subTemplateOf(client, d)) as Parameters<typeof renderSubject>[0];
  return renderSubject(keys, {
    workspace: 'default',
    project: d.project ?? 'default',
    flow: d.flowName,
    deployment: d.name,
    deployment_id: d.id,
    environment: d.environment ?? 'dev',
    work_pool: d.workPool ?? '',
  });
}

interface ExplainFlags {
  run?: string;
  audience?: string;
  issuer?: string;
  lifetime?: string;
  target?: ExplainTarget | 'auto';
  config?: string;
  offline?: boolean;
  now?: string;
  json?: boolean;
}

/** `tessera token …`: read, verify and explain identity tokens. */
export function registerTokenCommands(program: Command, ctx: () => CliContext, setExitCode: (code: number) => void): void {
  const token = program
    .command('token')
    .description('read an identity token, verify it, and explain why a relying party (AWS, GCP, Azure, Vault) accepts or refuses it')
    .addHelpText(
      'after',
      examples(
        ['tessera token decode $AWS_WEB_IDENTITY_TOKEN_FILE'],
        ['tessera token verify - --issuer https://tessera.example.com --audience billing-api < token'],
        ['tessera token explain token.jwt --config role-trust.json', 'why does AWS refuse it?'],
        ['tessera token explain --run 7f3c --audience sts.amazonaws.com --config role-trust.json'],
      ),
    );

  token
    .command('decode')
    .description('print the header and claims of a token (not verified; the token itself is never printed)')
    .argument('[token]', 'the token, a file holding it, or - for standard input')
    .option('--json', 'print {"header", "claims"} as JSON')
    .action(async (arg: string | undefined, opts: { json?: boolean }) => {
      const c = ctx();
      const raw = await readTokenArgument(arg);
      const t = decodeToken(raw);
      if (opts.json) return c.json(t);
      const s = c.style;
      const now = new Date();
      const h = t.header;
      const rows: [string, string][] = [['header', `alg ${String(h.alg)} · typ ${String(h.typ)} · kid ${String(h.kid)}`]];
      for (const [k, v] of Object.entries(h)) if (!['alg', 'typ', 'kid'].includes(k)) rows.push([`  ${k}`, JSON.stringify(v)]);
      const registered = ['iss', 'sub', 'aud', 'iat', 'nbf', 'exp', 'jti'];
      const ordered = [...registered.filter((k) => k in t.claims), ...Object.keys(t.claims).filter((k) => !registered.includes(k))];
      for (const k of ordered) {
        const v = t.claims[k];
        if ((k === 'exp' || k === 'iat' || k === 'nbf') && typeof v === 'number') {
          const iso = new Date(v * 1000).toISOString();
          let extra = ` (${formatAgo(iso, now)})`;
          if (k === 'exp' && typeof t.claims.iat === 'number') extra += `  lifetime ${formatDuration((v - t.claims.iat) * 1000)}`;
          rows.push([k, `${formatTimestamp(iso, c.timeZone)}${extra}`]);
        } else {
          rows.push([k, typeof v === 'string' ? v : JSON.stringify(v)]);
        }
      }
      const width = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) c.out(`${s.bold(k.padEnd(width))}  ${v}`);
      const exp = t.claims.exp;
      c.out(
        s.dim(
          `token ${tail(raw)} — not verified${typeof exp === 'number' && exp * 1000 < now.getTime() ? ', and expired' : ''}: \`tessera token verify\` checks the signature, \`tessera token explain\` a relying party`,
        ),
      );
    });

  token
    .command('verify')
    .description("verify a token like a relying party using @tessera/verify: signature with the issuer's keys, iss, aud, time, typ")
    .argument('[token]', 'the token, a file holding it, or - for standard input')
    .requiredOption('--issuer <url>', 'the issuer exactly as iss must name it')
    .requiredOption('--audience <aud...>', 'accepted audience(s)')
    .option('--algorithm <alg...>', 'accepted algorithms (default RS256 ES256)')
    .option('--clock-tolerance <duration>', 'allowed clock skew, e.g. 30s (at most 300 s)')
    .option('--jwks-uri <url>', "fetch keys from here instead of the issuer's discovery document")
    .option('--json', 'print the verified claims as JSON')
    .action(
      async (
        arg: string | undefined,
        opts: { issuer: string; audience: string[]; algorithm?: string[]; clockTolerance?: string; jwksUri?: string; json?: boolean },
      ) => {
        const c = ctx();
        const raw = await readTokenArgument(arg);
        const verifier = createVerifier({
          issuer: opts.issuer,
          audience: opts.audience,
          ...(opts.algorithm ? { algorithms: opts.algorithm as VerifierAlgorithm[] } : {}),
          ...(opts.clockTolerance ? { clockTolerance: opts.clockTolerance } : {}),
          ...(opts.jwksUri ? { jwks: { uri: opts.jwksUri } } : {}),
        });
        const claims = await verifier.verify(raw);
        if (opts.json) return c.json(claims);
        const exp = typeof claims.exp === 'number' ? claims.exp * 1000 : undefined;
        c.out(
          `${c.style.green('✓ verified')}  sub ${JSON.stringify(claims.sub)} · aud ${JSON.stringify(claims.aud)} · jti ${String(claims.jti)}${exp ? ` · exp in ${formatDuration(Math.max(0, exp - Date.now()))}` : ''}`,
        );
        c.out(
          c.style.dim(
            `  run ${String(claims.run_id)} attempt ${String(claims.run_attempt)} of deployment ${String(claims.deployment)} (${String(claims.environment)})`,
          ),
        );
      },
    );

  token
    .command('explain')
    .description(
      "explain, check by check, whether a relying party accepts a token — and what it would answer if not. Give a token, or --run and --audience for the token that run's tokens would be",
    )
    .argument('[token]', 'the token, a file holding it, or - for standard input')
    .option('--run <id>', 'explain the token this run would get now (built from the run and its deployment as the issuer builds it)')
    .option('--audience <aud>', 'with --run: the audience to ask for; with --target generic and no --config: the accepted audience')
    .option('--lifetime <duration>', 'with --run: the lifetime to ask for', '5m')
    .option('--target <target>', "generic, aws, gcp, azure, vault (default: from the configuration's shape)", parseTarget(true))
    .option('--config <file>', "the relying party's configuration (JSON): AWS trust policy, GCP provider, Azure credential, Vault role")
    .option('--issuer <url>', 'with --target generic and no --config: the issuer the service expects')
    .option('--offline', "skip fetching the issuer's keys (no signature check)")
    .option('--now <time>', 'judge the token at this ISO time instead of now')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `${examples(
        ['tessera token explain token.jwt --config role-trust.json'],
        ['tessera token explain --run 7f3c --audience sts.amazonaws.com --config role-trust.json'],
        ['tessera token explain - --target generic --issuer https://tessera.example.com --audience billing-api < token'],
      )}
Exit status: 0 accepted · 1 refused (or not every check could be simulated) · 2 usage or configuration error`,
    )
    .action(async (arg: string | undefined, opts: ExplainFlags) => {
      const c = ctx();
      if (opts.run && arg) throw new UsageError('give either a token or --run, not both');
      if (!opts.run && arg === undefined && process.stdin.isTTY)
        throw new UsageError('give a token (or - for standard input), or --run RUN --audience AUD');
      const now = opts.now ? new Date(opts.now) : new Date();
      if (Number.isNaN(now.getTime()))
        throw new UsageError(`--now must be an ISO time such as 2026-11-28T02:00:00Z, found ${JSON.stringify(opts.now)}`);
      let trust: TrustConfig;
      let what: string;
      if (opts.config) {
        ({ trust } = readTrustFile(opts.config, opts.target ?? 'auto'));
        what = `${TARGET_CONFIGS[trust.target]} ${opts.config}`;
      } else if ((opts.target ?? 'generic') === 'generic' && opts.issuer && opts.audience && !opts.run) {
        trust = parseTrustConfig({ issuer: opts.issuer, audience: opts.audience }, 'generic');
        what = `issuer ${opts.issuer}, audience ${opts.audience}`;
      } else {
        throw new UsageError(
          "--config FILE is required: the relying party's configuration (or --target generic --issuer URL --audience AUD)",
        );
      }
      const client = c.client();
      let decoded: DecodedToken;
      let about: string;
      const pre: ExplainCheck[] = [];
      if (opts.run) {
        if (!opts.audience) throw new UsageError('--run needs --audience: the audience the run would ask for');
        const run = await client.getFlowRun(opts.run);
        // Built by the issuer itself (same code as the token endpoint), unsigned and unrecorded.
        const preview = await client.previewIdentityToken(run.id, { audience: opts.audience, lifetime: opts.lifetime ?? '5m' });
        decoded = { header: preview.header, claims: preview.claims };
        const deployment = String(preview.claims.deployment);
        if (isTerminal(preview.runState as StateType)) {
          pre.push({
            id: 'tessera.run',
            ok: false,
            message: `Tessera would not issue this token now: run ${run.id.slice(0, 8)} has ended (${preview.runState}), and its credential with it`,
            answer: 'ERR_CREDENTIAL_REVOKED (the run credential died with the run)',
          });
        }
        pre.push(
          preview.audienceAllowed
            ? {
                id: 'tessera.audience',
                ok: true,
                message: `Tessera issues ${JSON.stringify(opts.audience)} tokens to deployment ${deployment}`,
              }
            : {
                id: 'tessera.audience',
                ok: false,
                message: `Tessera would not issue this token: audience ${JSON.stringify(opts.audience)} is not allowed for deployment ${JSON.stringify(deployment)}`,
                detail: `allowed: ${preview.allowedAudiences.join(', ') || 'none'}; add it to identity.audiences in tessera.yaml and deploy again`,
                answer: `ERR_AUDIENCE_NOT_ALLOWED (from Tessera, before any relying party sees a token)`,
              },
        );
        about = `the token run ${run.id.slice(0, 8)} (${deployment}, attempt ${Math.max(1, run.attempt)}) would get now: ${describeToken(decoded)}`;
      } else {
        const raw = await readTokenArgument(arg);
        decoded = decodeToken(raw);
        about = `token ${tail(raw)}: ${describeToken(decoded)}`;
        if (!opts.offline) pre.push(await signatureCheck(raw, decoded.claims.iss, client));
      }
      const result = explainToken(decoded, trust, { now });
      const combined = pre.length ? verdictOf(result.target, [...pre, ...result.checks]) : result;
      setExitCode(combined.verdict === 'accepted' ? EXIT.ok : EXIT.failure);
      if (opts.json) return c.json({ ...combined, token: { header: decoded.header, claims: decoded.claims } });
      c.out(`${c.style.bold('explain')} ${about}`);
      c.out(c.style.dim(`  against ${TARGET_NAMES[combined.target]} ${what}${opts.now ? ` at ${formatTimestamp(now, c.timeZone)}` : ''}`));
      c.out(formatChecks(combined.checks, c.style));
      c.out(formatVerdict(combined, c.style, what));
    });
}
