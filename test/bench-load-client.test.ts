import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLoadClient, parseResponse, serializeRequest } from '../bench/http-load.js';

// The issuance bench's load generator frames HTTP answers itself; a framing slip would show as wrong
// figures, not as an error, so its parser is checked here against node:http's own server.

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function serve(handler: Parameters<typeof createServer>[1]): Promise<number> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

describe('the bench load client', () => {
  it('frames answers by Content-Length, across reads, and waits for the rest', () => {
    const whole = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello');
    expect(parseResponse(whole.subarray(0, 20))).toBeUndefined();
    expect(parseResponse(whole.subarray(0, whole.length - 1))).toBeUndefined();
    const r = parseResponse(whole);
    expect(r && { ...r, body: r.body.toString() }).toEqual({ length: whole.length, status: 200, body: 'hello', close: false });
  });

  it('decodes chunked answers and sees Connection: close', () => {
    const raw = Buffer.from(
      'HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n',
    );
    expect(parseResponse(raw.subarray(0, raw.length - 2))).toBeUndefined();
    const r = parseResponse(raw);
    expect(r?.body.toString()).toBe('abcde');
    expect(r?.status).toBe(201);
    expect(r?.close).toBe(true);
  });

  it('refuses what it cannot frame', () => {
    expect(() => parseResponse(Buffer.from('SSH-2.0-x\r\n\r\n'))).toThrow(/not an HTTP/);
    expect(() => parseResponse(Buffer.from('HTTP/1.1 200 OK\r\n\r\nbody'))).toThrow(/without Content-Length/);
  });

  it('puts the request on the wire with its length', () => {
    const wire = serializeRequest(8080, { path: '/t', headers: { authorization: 'Bearer x' }, body: '{"é":1}' }).toString();
    expect(wire).toBe(
      'POST /t HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nconnection: keep-alive\r\nauthorization: Bearer x\r\ncontent-length: 8\r\n\r\n{"é":1}',
    );
  });

  it("talks to node:http: bodies, statuses, keep-alive, the server's close, large and chunked answers", async () => {
    let requests = 0;
    const port = await serve((req, res) => {
      requests++;
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        if (body === 'big') return res.end('x'.repeat(300_000));
        if (body === 'chunked') {
          res.write('part one, ');
          return setTimeout(() => res.end('part two'), 5);
        }
        if (body === 'close') res.setHeader('connection', 'close');
        res.statusCode = body === 'missing' ? 404 : 200;
        res.end(`${req.headers.authorization} said ${body}`);
      });
    });
    const client = createLoadClient(
      port,
      ['a', 'b', 'missing', 'big', 'chunked', 'close'].map((body) => ({ path: '/', headers: { authorization: `k-${body}` }, body })),
    );
    try {
      expect(await client.send(0)).toEqual({ status: 200, body: 'k-a said a' });
      expect(await client.send(1)).toEqual({ status: 200, body: 'k-b said b' });
      expect(client.connections).toBe(1);
      expect(await client.send(2)).toEqual({ status: 404, body: 'k-missing said missing' });
      expect((await client.send(3)).body).toHaveLength(300_000);
      expect(await client.send(4)).toEqual({ status: 200, body: 'part one, part two' });
      expect(await client.send(5)).toEqual({ status: 200, body: 'k-close said close' });
      expect(client.connections).toBe(0);
      // Many at once: one connection each, every answer to its own request.
      const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => client.send(i % 2)));
      expect(answers.map((a) => a.body)).toEqual(answers.map((_, i) => (i % 2 ? 'k-b said b' : 'k-a said a')));
      expect(client.connections).toBe(40);
      expect(requests).toBe(46);
    } finally {
      client.close();
    }
  });

  it('fails the request in flight when the connection drops', async () => {
    const port = await serve((req) => req.socket.destroy());
    const client = createLoadClient(port, [{ path: '/', headers: {}, body: 'x' }]);
    await expect(client.send(0)).rejects.toThrow(/closed before the answer|ECONNRESET/);
    client.close();
  });
});
