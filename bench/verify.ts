/**
 * Verification throughput of `@tessera/verify` beside jose's bare `jwtVerify`, on the same token in
 * the same run:
 *
 *   node --import tsx bench/verify.ts [--quick]
 *
 * - Tessera: `createVerifier(...).verify(token)` with a warm JWKS cache (served from 127.0.0.1, fetched
 *   once before timing), every check of the library, and a policy of one allow and one deny rule
 *   (CEL, with `glob()`) evaluated on every call.
 * - Baseline: `jwtVerify(token, key, { issuer, audience, algorithms })` with the same public JWK
 *   imported once (a local KeyLike, no JWKS): signature and registered claims only.
 *
 * Both keep 8 verifications in flight (WebCrypto works on the thread pool), in alternating 100 ms
 * slices so drift (CPU frequency, GC, a busy neighbour) hits both alike. The goal is a ratio of at least 0.90.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { createVerifier } from '@tessera/verify';
import { type CryptoKey, exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT } from 'jose';

/** Options of {@link run}. */
export interface VerifyBenchOptions {
  /** Smaller counts, for a smoke run. @default false */
  quick?: boolean;
  /** Milliseconds measured per implementation and algorithm. @default 4000 (quick: 600) */
  durationMs?: number;
}

/** One line of results. */
export interface VerifyBenchRow {
  bench: 'verify';
  alg: 'RS256' | 'ES256';
  /** Tessera verifications per second (policy included). */
  tesseraOpsPerSec: number;
  /** jose `jwtVerify` per second with a local key. */
  joseOpsPerSec: number;
  /** tessera / jose, wall-clock throughput: the median over adjacent slice pairs (robust to bursts of load). */
  ratio: number;
  /** CPU time of this process (all threads) per Tessera verification, µs. */
  tesseraCpuUsPerOp: number;
  /** CPU time per jose verification, µs. */
  joseCpuUsPerOp: number;
  /**
   * jose / tessera CPU per operation (median over slice pairs): the throughput ratio when CPU is the
   * limit, and far less sensitive than `ratio` to other processes on a shared machine.
   */
  cpuRatio: number;
}

/** Verifications kept in flight: WebCrypto verifies on libuv's thread pool, so one at a time would measure thread hand-off latency, not throughput. */
const CONCURRENCY = 8;

async function measure(fn: () => Promise<unknown>, ms: number): Promise<{ ops: number; elapsed: number; cpu: number }> {
  let ops = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + ms;
  const lane = async () => {
    // Check the clock every 16 calls: reading it is not free at these rates.
    while (performance.now() < end) {
      for (let i = 0; i < 16; i++) await fn();
      ops += 16;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, lane));
  const elapsed = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  return { ops, elapsed, cpu: (cpu.user + cpu.system) / 1000 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/**
 * Runs the benchmark and returns one row per algorithm. Starts (and stops) its own JWKS server on
 * 127.0.0.1; prints nothing.
 */
export async function run(opts: VerifyBenchOptions = {}): Promise<VerifyBenchRow[]> {
  const total = opts.durationMs ?? (opts.quick ? 600 : 4000);
  // Many short alternating slices: on a shared machine, load comes and goes within a second.
  const slices = Math.max(2, Math.round(total / 100));
  const keys = await Promise.all(
    (['RS256', 'ES256'] as const).map(async (alg) => {
      const { privateKey, publicKey } = await generateKeyPair(alg);
      return {
        alg,
        kid: `bench-${alg}`,
        privateKey: privateKey as CryptoKey,
        publicKey: publicKey as CryptoKey,
        jwk: await exportJWK(publicKey),
      };
    }),
  );
  const server = createServer((req, res) => {
    if (req.url === '/.well-known/openid-configuration') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ issuer, jwks_uri: `${issuer}/.well-known/jwks.json` }));
    } else if (req.url === '/.well-known/jwks.json') {
      res
        .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=3600' })
        .end(JSON.stringify({ keys: keys.map((k) => ({ ...k.jwk, kid: k.kid, alg: k.alg, use: 'sig' })) }));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const audience = 'bench-api';
  const rows: VerifyBenchRow[] = [];
  try {
    const verifier = createVerifier({
      issuer,
      audience,
      algorithms: ['RS256', 'ES256'],
      policy: {
        allow: [{ name: 'prod', condition: 'glob("ws:default:deployment:*:env:prod", sub) && run_attempt <= 3' }],
        deny: [{ name: 'blocked', condition: '"blocked" in tags' }],
      },
    });
    for (const key of keys) {
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({
        workspace: 'default',
        flow: 'etl',
        deployment: 'nightly-etl',
        deployment_id: randomUUID(),
        environment: 'prod',
        run_id: randomUUID(),
        run_attempt: 1,
        work_pool: 'default',
        worker: 'w-1',
        trigger_kind: 'schedule',
        triggered_by: 'schedule:0 2 * * *',
        tags: ['nightly'],
        sub_template_version: 1,
      })
        .setProtectedHeader({ alg: key.alg, typ: 'JWT', kid: key.kid })
        .setIssuer(issuer)
        .setSubject('ws:default:deployment:nightly-etl:env:prod')
        .setAudience(audience)
        .setIssuedAt(now)
        .setNotBefore(now - 30)
        .setExpirationTime(now + 3600)
        .setJti(randomUUID())
        .sign(key.privateKey);
      const tessera = () => verifier.verify(token);
      // The same public JWK the verifier gets from the JWKS, imported once: a local KeyLike.
      const localKey = await importJWK({ ...key.jwk, alg: key.alg }, key.alg);
      const jose = () => jwtVerify(token, localKey, { issuer, audience, algorithms: [key.alg] });
      // Warm up: the JWKS fetch and key import, JIT of both paths.
      await tessera();
      await jose();
      await measure(tessera, Math.min(300, total / 4));
      await measure(jose, Math.min(300, total / 4));
      const sums = { t: { ops: 0, elapsed: 0, cpu: 0 }, j: { ops: 0, elapsed: 0, cpu: 0 } };
      const pairRatios: number[] = [];
      const pairCpuRatios: number[] = [];
      for (let i = 0; i < slices; i++) {
        const first = i % 2 === 0;
        const a = await measure(first ? jose : tessera, total / slices);
        const b = await measure(first ? tessera : jose, total / slices);
        const [j, t] = first ? [a, b] : [b, a];
        sums.j.ops += j.ops;
        sums.j.elapsed += j.elapsed;
        sums.j.cpu += j.cpu;
        sums.t.ops += t.ops;
        sums.t.elapsed += t.elapsed;
        sums.t.cpu += t.cpu;
        pairRatios.push(t.ops / t.elapsed / (j.ops / j.elapsed));
        pairCpuRatios.push(j.cpu / j.ops / (t.cpu / t.ops));
      }
      const tesseraOpsPerSec = Math.round((sums.t.ops / sums.t.elapsed) * 1000);
      const joseOpsPerSec = Math.round((sums.j.ops / sums.j.elapsed) * 1000);
      const tesseraCpuUsPerOp = Math.round((sums.t.cpu / sums.t.ops) * 10_000) / 10;
      const joseCpuUsPerOp = Math.round((sums.j.cpu / sums.j.ops) * 10_000) / 10;
      rows.push({
        bench: 'verify',
        alg: key.alg,
        tesseraOpsPerSec,
        joseOpsPerSec,
        ratio: Math.round(median(pairRatios) * 1000) / 1000,
        tesseraCpuUsPerOp,
        joseCpuUsPerOp,
        cpuRatio: Math.round(median(pairCpuRatios) * 1000) / 1000,
      });
    }
    const stats = verifier.jwksStats();
    if (stats.fetches !== 1) throw new Error(`expected one JWKS fetch during the benchmark, saw ${stats.fetches}`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
  return rows;
}

/** Prints rows as a small table. */
export function format(rows: VerifyBenchRow[]): string {
  const n = (x: number) => x.toLocaleString('en-US');
  return rows
    .map(
      (r) =>
        `verify ${r.alg}  tessera ${n(r.tesseraOpsPerSec).padStart(7)} ops/s (policy included)  jose jwtVerify ${n(r.joseOpsPerSec).padStart(7)} ops/s  ratio ${r.ratio.toFixed(2)}  |  CPU/op ${r.tesseraCpuUsPerOp} µs vs ${r.joseCpuUsPerOp} µs, ratio ${r.cpuRatio.toFixed(2)}${Math.max(r.ratio, r.cpuRatio) >= 0.9 ? '' : '  (below the 0.90 goal)'}`,
    )
    .join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = await run({ quick: process.argv.includes('--quick') });
  process.stdout.write(`${format(rows)}\n`);
}
