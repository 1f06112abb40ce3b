/**
 * A small service that trusts Tessera runs: it accepts a request only when its bearer token
 * verifies against the issuer's discovery document and JWKS, for this service's audience.
 *
 *   TESSERA_ISSUER=http://127.0.0.1:4200 PORT=4300 node --import tsx examples/protected-api.ts
 */
import { createServer } from 'node:http';
import { createVerifier, VerificationError } from '@tessera/verify';

const issuer = process.env.TESSERA_ISSUER ?? 'http://127.0.0.1:4200';
const port = Number(process.env.PORT ?? 4300);
const audience = process.env.AUDIENCE ?? `http://127.0.0.1:${port}`;
const verifier = createVerifier({ issuer, audience });

const server = createServer(async (req, res) => {
  const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const match = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  if (!match) return send(401, { error: 'missing bearer token' }, { 'www-authenticate': 'Bearer' });
  try {
    const claims = await verifier.verify(match[1] as string);
    send(200, { hello: claims.sub, run: claims.run_id, deployment: claims.deployment, attempt: claims.run_attempt });
  } catch (e) {
    const reason = e instanceof VerificationError ? e.reason : 'ERR_INTERNAL';
    send(401, { error: 'invalid token', reason }, { 'www-authenticate': `Bearer error="invalid_token"` });
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`protected-api listening on http://127.0.0.1:${port} (audience ${audience}, issuer ${issuer})\n`);
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => server.close(() => process.exit(0)));
