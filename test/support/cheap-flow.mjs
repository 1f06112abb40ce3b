// A flow process in plain JavaScript for the load test (test/replicas.e2e.test.ts): it speaks the same
// protocol as the SDK's runner (Running, then Completed or Failed, with the run credential), but
// starts in a fraction of the time, so 2,000 real processes fit in CI's budget on 2 cores.
// Its side effect is one line `runId attempt` appended to $SIDE_EFFECTS just before it reports
// Completed: a run executed twice shows as two lines, whatever the server's states say.
// $FLOW_MODE: ok | flaky (fails its first attempt) | token (asks for an identity token, kept in $TOKENS).
import { appendFileSync } from 'node:fs';
import { request } from 'node:http';

const api = new URL(process.env.TESSERA_API_URL);
const runId = process.env.TESSERA_RUN_ID;
const attempt = Number(process.env.TESSERA_RUN_ATTEMPT);
const credential = process.env.TESSERA_RUN_CREDENTIAL;
const mode = process.env.FLOW_MODE ?? 'ok';

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(
      {
        host: api.hostname,
        port: api.port,
        method,
        path,
        agent: false,
        timeout: 15_000,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), authorization: `Bearer ${credential}` },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(data);
  });
}

/** Retries while the server is away (a replica died, PostgreSQL restarts): like the SDK, for up to 2 minutes. */
async function send(method, path, body) {
  const deadline = Date.now() + 120_000;
  for (let i = 1; ; i++) {
    let failure;
    try {
      const res = await call(method, path, body);
      if (res.status < 500 && res.status !== 429) return res;
      failure = `HTTP ${res.status} ${JSON.stringify(res.body)}`;
    } catch (e) {
      failure = e.message;
    }
    if (Date.now() > deadline) throw new Error(`${method} ${path}: ${failure}`);
    await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** i) * (0.75 + Math.random() / 2)));
  }
}

const state = (type, extra = {}) => send('POST', `/api/flow-runs/${runId}/state`, { state: { type }, ...extra });

const running = await state('RUNNING');
if (running.status !== 200) {
  process.stderr.write(`Running refused: ${running.status} ${JSON.stringify(running.body)}\n`);
  process.exit(1);
}
if (mode === 'flaky' && attempt === 1) {
  await state('FAILED', { error: { name: 'Error', message: 'ECONNRESET: flaky on its first attempt' } });
  process.exit(0);
}
if (mode === 'token') {
  const res = await send('POST', '/api/identity/token', { audience: 'sts.amazonaws.com', lifetime: '30m' });
  if (res.status !== 200) {
    process.stderr.write(`token refused: ${res.status} ${JSON.stringify(res.body)}\n`);
    process.exit(1);
  }
  appendFileSync(process.env.TOKENS, `${runId} ${res.body.token}\n`);
}
appendFileSync(process.env.SIDE_EFFECTS, `${runId} ${attempt}\n`);
const done = await state('COMPLETED', { result: { attempt } });
if (done.status !== 200) {
  process.stderr.write(`Completed refused: ${done.status} ${JSON.stringify(done.body)}\n`);
  process.exit(1);
}
