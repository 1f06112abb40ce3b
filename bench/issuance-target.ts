/**
 * One server under test for `bench/issuance.ts`, in a process of its own: the parent forks this file
 * (with its own `--import tsx`), sends `{ type: 'start', … }` over IPC, and gets back `ready` with the
 * HTTP targets to load, one per algorithm. `{ type: 'stop' }` closes the server and exits.
 *
 * A process per server, as each would run in production: no target shares a heap, a garbage
 * collector or an event loop with another target or with the load generator, and the parent can read
 * each server's own CPU time from /proc.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PerformanceObserver, performance } from 'node:perf_hooks';

export type Alg = 'RS256' | 'ES256';
export type ServerTargetName = 'tessera' | 'fastify' | 'oidc-provider';

/** An HTTP endpoint to load; each request takes the next of `variants` (e.g. one run credential each). */
export interface HttpTarget {
  type: 'http';
  port: number;
  path: string;
  variants: { headers: Record<string, string>; body: string }[];
}

export type ToTarget = { type: 'start'; target: ServerTargetName; algs: Alg[]; concurrency: number } | { type: 'stop' };
export type FromTarget = { type: 'ready'; specs: Partial<Record<Alg, HttpTarget>>; url: string } | { type: 'error'; message: string };

/** Claims shaped like a Tessera run token's (same size), for the baselines that sign by themselves. */
export function runLikeClaims(): Record<string, unknown> {
  return {
    iss: 'http://127.0.0.1:4200',
    sub: 'ws:default:deployment:bench-es256:env:dev',
    aud: 'bench-api',
    nbf: Math.floor(Date.now() / 1000) - 30,
    workspace: 'default',
    project: 'default',
    flow: 'bench',
    deployment: 'bench-es256',
    deployment_id: randomUUID(),
    environment: 'dev',
    run_id: randomUUID(),
    run_attempt: 1,
    work_pool: 'bench',
    worker: 'bench-worker',
    trigger_kind: 'manual',
    triggered_by: 'person:local admin',
    tags: [],
    sub_template_version: 1,
  };
}

interface Started {
  specs: Partial<Record<Alg, HttpTarget>>;
  url: string;
  close(): Promise<void>;
}

/** Tessera: a real server on a temp SQLite database; requests rotate over `concurrency` claimed runs per alg. */
async function startTessera(algs: Alg[], concurrency: number): Promise<Started> {
  const { startTestServer } = await import('@tessera/testing');
  const tessera = await startTestServer({
    logLevel: 'warn',
    backgroundServices: false,
    settings: { tokenRateLimitPerMinute: 1_000_000_000 },
  });
  try {
    const c = tessera.client;
    await c.createWorkPool({ name: 'bench' });
    const port = Number(new URL(tessera.url).port);
    const specs: Partial<Record<Alg, HttpTarget>> = {};
    for (const alg of algs) {
      const name = `bench-${alg.toLowerCase()}`;
      await c.putDeployment({
        name,
        flowName: 'bench',
        entrypoint: 'flows.ts:bench',
        path: '/tmp',
        workPool: 'bench',
        identity: { audiences: ['bench-api'], algorithm: alg },
      });
      const runIds = new Set<string>();
      for (let i = 0; i < concurrency; i++) runIds.add((await c.runDeployment(name)).id);
      const creds: string[] = [];
      for (let tries = 0; creds.length < runIds.size && tries < 100; tries++) {
        const poll = await c.poll('bench', {
          workerId: randomUUID(),
          workerName: 'bench-worker',
          capacity: runIds.size - creds.length,
          running: [],
          waitMs: 0,
        });
        for (const claimed of poll.runs) {
          if (!runIds.has(claimed.run.id)) continue;
          creds.push(claimed.credential);
          await c.withToken(claimed.credential).proposeState(claimed.run.id, { state: { type: 'RUNNING' } });
        }
      }
      if (creds.length < runIds.size) throw new Error(`tessera: claimed ${creds.length} of ${runIds.size} runs`);
      specs[alg] = {
        type: 'http',
        port,
        path: '/api/identity/token',
        variants: creds.map((cred) => ({
          headers: { 'content-type': 'application/json', authorization: `Bearer ${cred}` },
          body: JSON.stringify({ audience: 'bench-api' }),
        })),
      };
    }
    return { specs, url: tessera.url, close: () => tessera.close() };
  } catch (e) {
    await tessera.close();
    throw e;
  }
}

/** Bare Fastify: parse the JSON body, sign the same claims with jose, answer `{ token }`. */
async function startFastify(algs: Alg[]): Promise<Started> {
  const { default: Fastify } = await import('fastify');
  const { SignJWT, generateKeyPair } = await import('jose');
  const fastify = Fastify({ logger: false });
  const keys = new Map<Alg, Awaited<ReturnType<typeof generateKeyPair>>['privateKey']>();
  for (const alg of algs) keys.set(alg, (await generateKeyPair(alg)).privateKey);
  const baseClaims = runLikeClaims();
  fastify.post<{ Params: { alg: Alg }; Body: { audience?: string } }>('/token/:alg', async (request) => {
    const alg = request.params.alg;
    const token = await new SignJWT({ ...baseClaims, aud: request.body.audience ?? 'bench-api', jti: randomUUID() })
      .setProtectedHeader({ alg, typ: 'JWT', kid: 'bench' })
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(keys.get(alg) as NonNullable<ReturnType<typeof keys.get>>);
    return { token };
  });
  await fastify.listen({ port: 0, host: '127.0.0.1' });
  const port = (fastify.server.address() as AddressInfo).port;
  const specs: Partial<Record<Alg, HttpTarget>> = {};
  for (const alg of algs)
    specs[alg] = {
      type: 'http',
      port,
      path: `/token/${alg}`,
      variants: [{ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ audience: 'bench-api' }) }],
    };
  return { specs, url: `http://127.0.0.1:${port}`, close: () => fastify.close() };
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

/** oidc-provider v9: `client_credentials`, JWT access tokens for one resource server per alg. */
async function startOidcProvider(algs: Alg[]): Promise<Started> {
  const { default: Provider } = await import('oidc-provider');
  const { exportJWK, generateKeyPair } = await import('jose');
  const keys = [];
  for (const alg of algs) {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    keys.push({ ...(await exportJWK(privateKey)), kid: `op-${alg}`, alg, use: 'sig' });
  }
  const server = createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;
  const clientSecret = randomUUID() + randomUUID();
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'bench',
        client_secret: clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys } as never,
    ttl: { ClientCredentials: 300 },
    features: {
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => 'https://rs256.bench.test',
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => ({
          scope: 'api:read',
          audience: resource,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: resource.includes('es256') ? 'ES256' : 'RS256' } },
        }),
      },
    },
  });
  // The provider's own error reporting (none expected).
  provider.on('server_error', (_ctx, err) => process.stderr.write(`oidc-provider: ${err.message}\n`));
  server.on('request', provider.callback());
  const basic = `Basic ${Buffer.from(`bench:${clientSecret}`).toString('base64')}`;
  const specs: Partial<Record<Alg, HttpTarget>> = {};
  for (const alg of algs)
    specs[alg] = {
      type: 'http',
      port,
      path: '/token',
      variants: [
        {
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
          body: `grant_type=client_credentials&scope=api%3Aread&resource=${encodeURIComponent(`https://${alg.toLowerCase()}.bench.test`)}`,
        },
      ],
    };
  return {
    specs,
    url: issuer,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/**
 * Diagnostics, on stderr, when the bench runs with `BENCH_STALLS=1`: every event-loop stall over 5 ms
 * (a 1 ms timer that came late), every garbage collection over 5 ms, and every 5 s the event loop's
 * utilization and the time spent collecting garbage by kind. The timer costs the server a little.
 */
function watchStalls(): void {
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    if (now - last > 6) process.stderr.write(`${process.pid} stall ${(now - last - 1).toFixed(1)} ms at ${new Date().toISOString()}\n`);
    last = now;
  }, 1).unref();
  const gcTotals = new Map<number, { n: number; ms: number }>();
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as unknown as { detail: { kind: number } }).detail.kind;
      const t = gcTotals.get(kind) ?? { n: 0, ms: 0 };
      t.n++;
      t.ms += e.duration;
      gcTotals.set(kind, t);
      if (e.duration > 5)
        process.stderr.write(`${process.pid} gc (kind ${kind}) ${e.duration.toFixed(1)} ms at ${new Date().toISOString()}\n`);
    }
  }).observe({ entryTypes: ['gc'] });
  let elu = performance.eventLoopUtilization();
  setInterval(() => {
    const now = performance.eventLoopUtilization();
    const d = performance.eventLoopUtilization(now, elu);
    elu = now;
    const gc = [...gcTotals].map(([kind, t]) => `kind ${kind}: ${t.n} × ${(t.ms / t.n).toFixed(2)} ms`).join(', ');
    process.stderr.write(`${process.pid} event loop ${(d.utilization * 100).toFixed(0)} % busy; gc ${gc || 'none'}\n`);
    gcTotals.clear();
  }, 5000).unref();
}

const STARTERS: Record<ServerTargetName, (algs: Alg[], concurrency: number) => Promise<Started>> = {
  tessera: startTessera,
  fastify: (algs) => startFastify(algs),
  'oidc-provider': (algs) => startOidcProvider(algs),
};

if (process.send) {
  if (process.env.BENCH_STALLS) watchStalls();
  const send = (m: FromTarget) => process.send?.(m);
  let started: Started | undefined;
  // The parent gone (a crash, Ctrl-C) means stop: never outlive the bench.
  process.on('disconnect', () => void (started?.close() ?? Promise.resolve()).finally(() => process.exit(0)));
  process.on('message', (m: ToTarget) => {
    if (m.type === 'start') {
      STARTERS[m.target](m.algs, m.concurrency).then(
        (s) => {
          started = s;
          send({ type: 'ready', specs: s.specs, url: s.url });
        },
        (e: Error) => send({ type: 'error', message: e.stack ?? e.message }),
      );
    } else if (m.type === 'stop') {
      void (started?.close() ?? Promise.resolve()).finally(() => process.exit(0));
    }
  });
}
