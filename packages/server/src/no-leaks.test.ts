import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LogEntry, redactSecrets } from '@tessera/core';
import { claimRun, startTestServer, type TestServer, textCells } from '@tessera/testing';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** Deploys `name` with identity audiences, starts a run of it and claims it like a worker; the run is Running. */
async function deployAndClaim(server: TestServer, name: string, algorithm: 'RS256' | 'ES256' = 'RS256') {
  await server.client.putDeployment({
    name,
    flowName: 'etl',
    entrypoint: 'flows.ts:etl',
    path: '/tmp',
    workPool: 'default',
    identity: { audiences: ['vault.internal'], algorithm },
  });
  return claimRun(server, (await server.client.runDeployment(name)).id);
}

describe('redactSecrets', () => {
  // Catches: a change to the JWT or credential patterns of @tessera/core's redactSecrets (every log path uses it).
  // Made here, JWT-shaped (a token's three base64url parts), signed by nobody.
  const jwt = [{ alg: 'RS256', typ: 'JWT' }, { sub: 'ws:default:deployment:etl:env:prod', aud: 'sts' }, 'signature-signature-signature']
    .map((part) => Buffer.from(typeof part === 'string' ? part : JSON.stringify(part)).toString('base64url'))
    .join('.');
  const credential = `tsr_${'Ab3_-x'.repeat(6)}9Yz`;

  it('masks a JWT, keeping its last 4 characters', () => {
    expect(redactSecrets(jwt)).toBe(`[redacted JWT …${jwt.slice(-4)}]`);
  });

  it('masks a run credential (tsr_…), keeping its last 4 characters', () => {
    expect(redactSecrets(credential)).toBe('[redacted credential …x9Yz]');
  });

  it('masks the token of a bearer header, JWT or credential, and keeps the header name', () => {
    expect(redactSecrets(`authorization: Bearer ${jwt}`)).toBe(`authorization: Bearer [redacted JWT …${jwt.slice(-4)}]`);
    expect(redactSecrets(`Authorization: Bearer ${credential}`)).toBe(
      `Authorization: Bearer [redacted credential …${credential.slice(-4)}]`,
    );
  });

  it('leaves text without secrets unchanged (including short look-alikes)', () => {
    for (const text of ['', 'loaded 42 rows into s3://bucket/key', 'eyJ alone, tsr_short, a.b.c', 'ws:default:deployment:etl:env:prod']) {
      expect(redactSecrets(text)).toBe(text);
    }
  });

  it('masks a JWT embedded mid-sentence, and every secret on a line, leaving the words around them', () => {
    const line = `got token ${jwt}, then used it (cred=${credential}) and again:${jwt}.`;
    const masked = redactSecrets(line);
    expect(masked).toBe(
      `got token [redacted JWT …${jwt.slice(-4)}], then used it (cred=[redacted credential …${credential.slice(-4)}]) and again:[redacted JWT …${jwt.slice(-4)}].`,
    );
    expect(masked).not.toContain('eyJ');
    expect(masked).not.toContain('tsr_');
  });
});

describe('server-side redaction of run logs', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ backgroundServices: false });
    await server.client.createWorkPool({ name: 'default' });
  });
  afterAll(async () => server.close());

  // Catches: POST /api/logs storing (or GET /api/flow-runs/:id/logs returning) raw messages, i.e. the
  // server trusting the SDK to have masked them — a client that is not the SDK (curl, Python) sends raw lines.
  it('masks a real issued JWT and the run credential in raw lines posted to /api/logs, in the API and in the database', async () => {
    const { runId, credential } = await deployAndClaim(server, 'raw-logs');
    const res = await fetch(`${server.url}/api/identity/token`, {
      method: 'POST',
      headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
      body: JSON.stringify({ audience: 'vault.internal' }),
    });
    expect(res.status).toBe(200);
    const { token } = (await res.json()) as { token: string };
    expect(decodeJwt(token).run_id).toBe(runId);

    const now = new Date().toISOString();
    const entries: LogEntry[] = [
      { flowRunId: runId, level: 'info', message: `got token ${token} for vault`, timestamp: now },
      { flowRunId: runId, level: 'warn', message: `env dump: TESSERA_RUN_CREDENTIAL=${credential}`, timestamp: now },
      { flowRunId: runId, level: 'error', message: `curl -H "authorization: Bearer ${credential}" -d token=${token}`, timestamp: now },
    ];
    const posted = await fetch(`${server.url}/api/logs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
      body: JSON.stringify({ entries }),
    });
    expect(posted.status).toBe(200);
    expect(await posted.json()).toEqual({ accepted: 3 });

    const raw = await (await fetch(`${server.url}/api/flow-runs/${runId}/logs`)).text();
    const { items } = await server.client.getLogs(runId);
    expect(items.map((l) => l.message)).toEqual([
      `got token [redacted JWT …${token.slice(-4)}] for vault`,
      `env dump: TESSERA_RUN_CREDENTIAL=[redacted credential …${credential.slice(-4)}]`,
      `curl -H "authorization: Bearer [redacted credential …${credential.slice(-4)}]" -d token=[redacted JWT …${token.slice(-4)}]`,
    ]);
    const stored = await server.services.ctx.db.selectFrom('logs').select('message').where('flow_run_id', '=', runId).execute();
    for (const text of [raw, ...stored.map((r) => r.message)]) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(credential);
      // Not even the JWT's signature-less prefix (header.payload) survives.
      expect(text).not.toContain(token.split('.').slice(0, 2).join('.'));
    }
    expect(server.logs.join('\n')).not.toContain(token);
  });
});

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() ? filesUnder(path) : e.isFile() ? [path] : [];
  });
}

/** A private JWK member with a value: `"d": "<base64url>"` and RSA's CRT members. */
const PRIVATE_JWK_MEMBER = /"(d|p|q|dp|dq|qi)"\s*:\s*"[A-Za-z0-9_-]{16,}"/;

/** Private JWK members (`"d": "<base64url>"` …) or a PEM private key anywhere in the files under `dir` (read as bytes). */
function privateKeyMaterial(dir: string): string[] {
  const found: string[] = [];
  for (const file of filesUnder(dir)) {
    const text = readFileSync(file).toString('latin1');
    for (const m of text.matchAll(new RegExp(PRIVATE_JWK_MEMBER, 'g'))) found.push(`${file}: "${m[1]}"`);
    if (text.includes('PRIVATE KEY')) found.push(`${file}: PRIVATE KEY`);
  }
  return found;
}

describe('private signing keys without a key file', () => {
  // Catches: private keys written anywhere under the server's home (database rows, a stray key file, a
  // journal) when no --key-file is given; the docs promise they live in memory only.
  it('never reach a file under the home directory, through issuing tokens, a rotation and a stop', async () => {
    const server = await startTestServer({ backgroundServices: false });
    try {
      await server.client.createWorkPool({ name: 'default' });
      const rs = await deployAndClaim(server, 'disk-rs', 'RS256');
      const es = await deployAndClaim(server, 'disk-es', 'ES256');
      for (const { as } of [rs, es]) for (let i = 0; i < 3; i++) await as.issueIdentityToken({ audience: 'vault.internal' });
      await server.client.rotateSigningKeys({ revokeCurrent: true });
      for (const { as } of [rs, es]) await as.issueIdentityToken({ audience: 'vault.internal' });
      expect(privateKeyMaterial(server.home)).toEqual([]);
      // And not in the database either, whichever store (PostgreSQL keeps no file under home).
      let jwkCells = 0;
      for (const { table, column, value } of await textCells(server)) {
        if (value.includes('"kty"')) jwkCells++;
        expect(value, `${table}.${column}`).not.toMatch(PRIVATE_JWK_MEMBER);
        expect(value, `${table}.${column}`).not.toContain('PRIVATE KEY');
      }
      expect(jwkCells).toBeGreaterThanOrEqual(4); // the public JWKs of the 4 keys (2 revoked) are there
      await server.stop();
      const files = filesUnder(server.home);
      if (!server.databaseUrl) {
        // The scan does see JSON inside the SQLite file: the public JWKs stored there.
        const db = files.find((f) => f.endsWith('tessera.db'));
        expect(db && statSync(db).size).toBeGreaterThan(0);
        expect(readFileSync(db as string).toString('latin1')).toMatch(/"kty"\s*:\s*"RSA"/);
      }
      expect(privateKeyMaterial(server.home)).toEqual([]);
    } finally {
      await server.close();
    }
  });

  // The scan's control: with a key file the same scan must find the private members, or it proves nothing.
  it('(control) the scan finds the private members of a key file', async () => {
    const home = mkdtempSync(join(tmpdir(), 'tessera-test-'));
    const server = await startTestServer({ backgroundServices: false, home, keyFile: join(home, 'keys.json') });
    try {
      const found = privateKeyMaterial(home);
      expect(found).toContain(`${join(home, 'keys.json')}: "d"`);
      expect(found).toContain(`${join(home, 'keys.json')}: "qi"`);
    } finally {
      await server.close();
      rmSync(home, { recursive: true, force: true });
    }
  });

  // Catches: keys.ts generating signing keys `extractable: true` without a key file (KeyManager.create),
  // which would let any code path export and log them.
  it('are non-extractable CryptoKeys: exportKey rejects, before and after a rotation', async () => {
    const server = await startTestServer({ backgroundServices: false });
    try {
      const check = async () => {
        for (const alg of ['RS256', 'ES256'] as const) {
          const { privateKey } = server.services.keys.signingKey(alg);
          expect(privateKey.type).toBe('private');
          expect(privateKey.extractable, alg).toBe(false);
          await expect(crypto.subtle.exportKey('jwk', privateKey)).rejects.toThrow();
          await expect(crypto.subtle.exportKey('pkcs8', privateKey)).rejects.toThrow();
        }
      };
      await check();
      const before = server.services.keys.signingKey('RS256').kid;
      await server.client.rotateSigningKeys({ revokeCurrent: true });
      expect(server.services.keys.signingKey('RS256').kid).not.toBe(before);
      await check();
    } finally {
      await server.close();
    }
  });
});
