/** The URLs a DPoP proof's htu may name (RFC 9449 §4.3): the server's own, never the caller's Host. */
import type { FastifyRequest } from 'fastify';
import { describe, expect, it } from 'vitest';
import { endpointUrls } from './route.js';

/** A request whose connection reached `localAddress:localPort` and which claims to be for `host`. */
function requestAt(localAddress: string, localPort: number, host = 'evil.example', encrypted = false): FastifyRequest {
  return { host, headers: { host }, raw: { socket: { localAddress, localPort, encrypted } } } as unknown as FastifyRequest;
}

describe('endpointUrls', () => {
  it('names the issuer, the listen address (as localhost too on loopback), and where the connection arrived', () => {
    expect(
      endpointUrls('https://tessera.example.com/', 'http://127.0.0.1:4200', '/api/identity/token', requestAt('127.0.0.1', 4200)),
    ).toEqual([
      'https://tessera.example.com/api/identity/token',
      'http://127.0.0.1:4200/api/identity/token',
      'http://localhost:4200/api/identity/token',
    ]);
  });

  it('names the interface address a server bound to 0.0.0.0 or :: was reached at, in URL form', () => {
    const issuer = 'http://0.0.0.0:4200';
    expect(endpointUrls(issuer, issuer, '/t', requestAt('::ffff:10.0.0.5', 4200))).toContain('http://10.0.0.5:4200/t');
    expect(endpointUrls(issuer, issuer, '/t', requestAt('fd00::5', 4200))).toContain('http://[fd00::5]:4200/t');
    expect(endpointUrls(issuer, issuer, '/t', requestAt('10.0.0.5', 4443, 'x', true))).toContain('https://10.0.0.5:4443/t');
  });

  it('never names the Host the request claims', () => {
    const urls = endpointUrls('https://tessera.example.com', 'http://127.0.0.1:4200', '/t', requestAt('127.0.0.1', 4200, 'evil.example'));
    expect(urls.some((u) => u.includes('evil.example'))).toBe(false);
  });

  it('names the internal URLs the operator declared, and nothing the request claims', () => {
    const urls = endpointUrls(
      'https://tessera.example.com',
      'http://0.0.0.0:4200',
      '/t',
      requestAt('10.0.0.5', 4200, 'tessera.other.svc'),
      ['http://tessera.tessera.svc:4200', 'https://tessera-internal.corp/'],
    );
    expect(urls).toEqual(
      expect.arrayContaining(['http://tessera.tessera.svc:4200/t', 'https://tessera-internal.corp/t', 'https://tessera.example.com/t']),
    );
    expect(urls.some((u) => u.includes('other'))).toBe(false);
  });
});
