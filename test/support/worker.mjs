// A Tessera worker in its own process for test/replicas.e2e.test.ts, running the plain-JavaScript
// flow process (cheap-flow.mjs) without the tsx loader. Options as JSON in $WORKER_OPTIONS.
// SIGTERM stops it gracefully.
import { createWorker } from '@tessera/worker';

const options = JSON.parse(process.env.WORKER_OPTIONS ?? '{}');
const line = (level) => (m) => process.stderr.write(`${new Date().toISOString()} ${level} ${m}\n`);
const worker = createWorker({
  ...options,
  runnerModule: new URL('./cheap-flow.mjs', import.meta.url),
  loader: false,
  logger: { info: () => {}, warn: line('WARN'), error: line('ERROR') },
  output: { stdout: process.stderr, stderr: process.stderr },
});
worker.start();
process.stdout.write('started\n');
process.on('SIGTERM', () => {
  worker.stop().then(() => process.exit(0));
});
