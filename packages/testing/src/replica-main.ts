/**
 * A server replica in its own process, for multi-replica tests (`startReplica`): reads its
 * `ServerOptions` as JSON from `TESSERA_REPLICA_OPTIONS`, prints one JSON line with its URL once it
 * listens, logs to stderr, and shuts down cleanly on SIGTERM (SIGKILL is the crash being tested).
 * @module
 */
import { type ServerOptions, startServer } from '@tessera/server';

const options = JSON.parse(process.env.TESSERA_REPLICA_OPTIONS ?? '{}') as ServerOptions;
const server = await startServer({ ...options, logStream: process.stderr });
process.stdout.write(`${JSON.stringify({ url: server.url, replicaId: server.replicaId, pid: process.pid })}\n`);
let closing = false;
const stop = () => {
  if (closing) return;
  closing = true;
  server.close().then(
    () => process.exit(0),
    (e) => {
      process.stderr.write(`replica: close failed: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
