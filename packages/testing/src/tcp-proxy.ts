import { createConnection, createServer, type Socket } from 'node:net';

/** Where a {@link TcpProxy} forwards connections. */
export interface ProxyTarget {
  host: string;
  port: number;
}

/** A TCP proxy on 127.0.0.1 (see {@link startTcpProxy}). */
export interface TcpProxy {
  /** The port it listens on. */
  port: number;
  /** `http://127.0.0.1:<port>`, for HTTP targets. */
  url: string;
  /** Replaces the targets; open connections stay where they are. */
  setTargets(targets: ProxyTarget[]): void;
  /**
   * Simulates losing the network to the targets: every open connection is reset and new ones are
   * reset as soon as they arrive, until {@link TcpProxy.restore}.
   */
  cut(): void;
  restore(): void;
  /** Connections open now. */
  readonly connections: number;
  close(): Promise<void>;
}

/**
 * A small TCP proxy on 127.0.0.1 for multi-replica and outage tests. With several targets it is a
 * round-robin load balancer that skips targets refusing connections (a killed replica), like the
 * one replicas sit behind in production; in front of PostgreSQL, {@link TcpProxy.cut} and
 * {@link TcpProxy.restore} simulate a database outage without touching the shared server.
 */
export async function startTcpProxy(options: { targets: ProxyTarget[]; port?: number }): Promise<TcpProxy> {
  let targets = [...options.targets];
  let next = 0;
  let down = false;
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
  };

  const connectTo = (client: Socket, tries: number) => {
    if (down || tries >= targets.length || client.destroyed) {
      client.destroy();
      return;
    }
    const target = targets[next++ % targets.length] as ProxyTarget;
    const upstream = createConnection({ host: target.host, port: target.port });
    track(upstream);
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      if (down || client.destroyed) {
        upstream.destroy();
        client.destroy();
        return;
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.once('error', () => {
      // A target that refuses (a dead replica): try the next one; after that, a broken pipe.
      if (!connected) connectTo(client, tries + 1);
      else client.destroy();
    });
    upstream.once('close', () => {
      if (connected) client.destroy();
    });
    client.once('close', () => upstream.destroy());
  };

  const server = createServer({ pauseOnConnect: true }, (client) => {
    track(client);
    if (down) {
      client.resetAndDestroy();
      return;
    }
    connectTo(client, 0);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    setTargets(t) {
      targets = [...t];
    },
    cut() {
      down = true;
      for (const s of sockets) s.resetAndDestroy();
    },
    restore() {
      down = false;
    },
    get connections() {
      return sockets.size;
    },
    async close() {
      down = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
