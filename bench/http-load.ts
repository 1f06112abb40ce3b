/**
 * A lean HTTP/1.1 client for load generation: requests are serialized once, written straight to
 * keep-alive `net` sockets, and answers are framed by `Content-Length` (or chunked encoding) with no
 * HTTP parser objects, no header maps and no streams. It costs the generator a fraction of what
 * `node:http`'s client does per request (≈ 120 µs on the bench machine), which on a 2-CPU machine is
 * CPU taken from the server under test.
 *
 * Only what the bench needs: one request at a time per connection (no pipelining), POST with a
 * fixed body, answers with `Content-Length` or `Transfer-Encoding: chunked`, `Connection: close`
 * honoured by opening a new connection next time.
 */
import { connect, type Socket } from 'node:net';

/** One request, as the client will send it. */
export interface LoadRequest {
  method?: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** What a request gives: the status and the body (as text). */
export interface LoadResponse {
  status: number;
  body: string;
}

/** The bytes of `r` on the wire (Host, Content-Length and keep-alive added). */
export function serializeRequest(port: number, r: LoadRequest): Buffer {
  const body = Buffer.from(r.body);
  const lines = [`${r.method ?? 'POST'} ${r.path} HTTP/1.1`, `host: 127.0.0.1:${port}`, 'connection: keep-alive'];
  for (const [k, v] of Object.entries(r.headers)) lines.push(`${k}: ${v}`);
  lines.push(`content-length: ${body.length}`);
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), body]);
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Frames one HTTP/1.1 response at the start of `buf`: its length in bytes, status, body and whether
 * the server will close the connection; `undefined` while incomplete.
 */
export function parseResponse(buf: Buffer): { length: number; status: number; body: Buffer; close: boolean } | undefined {
  const headEnd = buf.indexOf(CRLFCRLF);
  if (headEnd < 0) return undefined;
  const head = buf.toString('latin1', 0, headEnd);
  const status = Number(head.slice(9, 12));
  if (!head.startsWith('HTTP/1.') || !Number.isInteger(status)) throw new Error(`not an HTTP/1.x response: ${head.slice(0, 40)}`);
  let contentLength = -1;
  let chunked = false;
  let close = head.startsWith('HTTP/1.0');
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line
      .slice(colon + 1)
      .trim()
      .toLowerCase();
    if (name === 'content-length') contentLength = Number(value);
    else if (name === 'transfer-encoding') chunked = value.includes('chunked');
    else if (name === 'connection') close = value.includes('close');
  }
  const start = headEnd + 4;
  if (chunked) {
    const parts: Buffer[] = [];
    let at = start;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', at);
      if (lineEnd < 0) return undefined;
      const size = Number.parseInt(buf.toString('latin1', at, lineEnd), 16);
      if (!Number.isFinite(size)) throw new Error('bad chunk size');
      if (size === 0) {
        // The last chunk, no trailers: "0\r\n\r\n".
        if (buf.length < lineEnd + 4) return undefined;
        return { length: lineEnd + 4, status, body: Buffer.concat(parts), close };
      }
      if (buf.length < lineEnd + 2 + size + 2) return undefined;
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  if (contentLength < 0) {
    // No length: only a 204/304 or a 1xx has no body; anything else would need a close to end it.
    if (status === 204 || status === 304 || status < 200) return { length: start, status, body: Buffer.alloc(0), close };
    throw new Error(`HTTP ${status} without Content-Length or chunked encoding`);
  }
  if (buf.length < start + contentLength) return undefined;
  return { length: start + contentLength, status, body: buf.subarray(start, start + contentLength), close };
}

interface Conn {
  socket: Socket;
  buf: Buffer;
  pending?: { resolve(r: LoadResponse): void; reject(e: Error): void };
  dead: boolean;
}

/**
 * A client for `127.0.0.1:port`: `send(i)` writes request `i % requests.length` on an idle
 * connection (or a new one) and resolves with the answer. `close()` ends every connection.
 */
export function createLoadClient(port: number, requests: LoadRequest[]) {
  const wire = requests.map((r) => serializeRequest(port, r));
  const idle: Conn[] = [];
  const all = new Set<Conn>();

  const open = (): Conn => {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true });
    const c: Conn = { socket, buf: Buffer.alloc(0), dead: false };
    const fail = (e: Error) => {
      if (c.dead) return;
      c.dead = true;
      all.delete(c);
      const i = idle.indexOf(c);
      if (i >= 0) idle.splice(i, 1);
      c.pending?.reject(e);
      c.pending = undefined;
      socket.destroy();
    };
    socket.on('data', (chunk: Buffer) => {
      c.buf = c.buf.length === 0 ? chunk : Buffer.concat([c.buf, chunk]);
      let res: ReturnType<typeof parseResponse>;
      try {
        res = parseResponse(c.buf);
      } catch (e) {
        return fail(e as Error);
      }
      if (!res) return;
      if (res.length !== c.buf.length) return fail(new Error('bytes after the response (the server answered what was not asked)'));
      c.buf = Buffer.alloc(0);
      const p = c.pending;
      c.pending = undefined;
      if (res.close) {
        c.dead = true;
        all.delete(c);
        socket.end();
      } else idle.push(c);
      p?.resolve({ status: res.status, body: res.body.toString() });
    });
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed before the answer')));
    all.add(c);
    return c;
  };

  return {
    send(i: number): Promise<LoadResponse> {
      return new Promise((resolve, reject) => {
        const c = idle.pop() ?? open();
        c.pending = { resolve, reject };
        c.socket.write(wire[i % wire.length] as Buffer);
      });
    },
    /** Connections open now (idle or busy). */
    get connections() {
      return all.size;
    },
    close() {
      for (const c of all) {
        c.dead = true;
        c.socket.destroy();
      }
      all.clear();
      idle.length = 0;
    },
  };
}
