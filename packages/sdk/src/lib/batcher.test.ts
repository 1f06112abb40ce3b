import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiClient, type TaskRunEvent } from '@tessera/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Batcher } from './batcher.js';
import { RunReporter } from './reporter.js';

/** A real HTTP server on 127.0.0.1 that records the batches it receives. */
let server: Server;
let baseUrl = '';
let latencyMs = 0;
const batches: { path: string; items: unknown[] }[] = [];

beforeAll(async () => {
  server = createServer(async (req, res) => {
    let text = '';
    for await (const chunk of req) text += chunk;
    const body = JSON.parse(text) as { events?: unknown[]; entries?: unknown[] };
    const items = body.events ?? body.entries ?? [];
    if (latencyMs) await new Promise((r) => setTimeout(r, latencyMs));
    batches.push({ path: req.url ?? '', items });
    res.writeHead(req.url === '/api/fail' ? 500 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ accepted: items.length }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

function event(i: number): TaskRunEvent {
  return {
    taskRunId: `t${i}`,
    flowRunId: 'run',
    taskKey: 'k',
    name: `k-${i}`,
    state: { type: 'COMPLETED' },
    attempt: 1,
    maxRetries: 0,
    timestamp: new Date().toISOString(),
  };
}

describe('Batcher', () => {
  it('sends items pushed together as one request after the interval', async () => {
    const sent: number[][] = [];
    const b = new Batcher<number>({ intervalMs: 20, send: async (items) => sent.push(items) });
    b.push(1);
    b.push(2);
    b.push(3);
    expect(sent).toEqual([]);
    await new Promise((r) => setTimeout(r, 60));
    expect(sent).toEqual([[1, 2, 3]]);
  });

  it('starts a send as soon as maxItems are queued', async () => {
    const sent: number[][] = [];
    const b = new Batcher<number>({ intervalMs: 10_000, maxItems: 3, send: async (items) => sent.push(items) });
    for (let i = 0; i < 7; i++) b.push(i);
    await new Promise((r) => setTimeout(r, 10));
    expect(sent).toEqual([
      [0, 1, 2],
      [3, 4, 5],
    ]);
    await b.flush();
    expect(sent.flat()).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('keeps one request in flight and preserves order across requests', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const sent: number[] = [];
    const b = new Batcher<number>({
      intervalMs: 1,
      maxItems: 10,
      send: async (items) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 5));
        sent.push(...items);
        inFlight--;
      },
    });
    for (let i = 0; i < 95; i++) {
      b.push(i);
      if (i % 7 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await b.flush();
    expect(maxInFlight).toBe(1);
    expect(sent).toEqual(Array.from({ length: 95 }, (_, i) => i));
  });

  it('splits batches by approximate size', async () => {
    const sent: string[][] = [];
    const b = new Batcher<string>({ maxBytes: 10, weigh: (s) => s.length, send: async (items) => sent.push(items) });
    for (const s of ['aaaa', 'bbbb', 'cccc', 'dddddddddddddd', 'e']) b.push(s);
    await b.flush();
    expect(sent).toEqual([['aaaa', 'bbbb'], ['cccc'], ['dddddddddddddd'], ['e']]);
  });

  it('drops a batch that cannot be sent, reports it, and goes on', async () => {
    const errors: number[] = [];
    const sent: number[] = [];
    const b = new Batcher<number>({
      maxItems: 2,
      send: async (items) => {
        if (items.includes(0)) throw new Error('down');
        sent.push(...items);
      },
      onError: (_e, n) => errors.push(n),
    });
    for (let i = 0; i < 5; i++) b.push(i);
    await b.flush();
    expect(errors).toEqual([2]);
    expect(sent).toEqual([2, 3, 4]);
  });

  it('ignores items pushed after close', async () => {
    const sent: number[] = [];
    const b = new Batcher<number>({ send: async (items) => sent.push(...items) });
    b.push(1);
    await b.flush();
    b.close();
    b.push(2);
    await b.flush();
    expect(sent).toEqual([1]);
  });
});

describe('RunReporter against a real HTTP server', () => {
  it('delivers 3,000 task-run events in order in a few requests', async () => {
    batches.length = 0;
    latencyMs = 2;
    const reporter = new RunReporter(new ApiClient({ baseUrl }));
    const t0 = performance.now();
    for (let i = 0; i < 3_000; i++) reporter.events.push(event(i));
    const pushMs = performance.now() - t0;
    await reporter.flush();
    latencyMs = 0;
    const received = batches.filter((b) => b.path === '/api/task-runs/events');
    expect(received.flatMap((b) => b.items as TaskRunEvent[]).map((e) => e.taskRunId)).toEqual(
      Array.from({ length: 3_000 }, (_, i) => `t${i}`),
    );
    // 500 per request at most, so at least 6; a loaded machine may split a batch, never per event.
    expect(received.length).toBeGreaterThanOrEqual(6);
    expect(received.length).toBeLessThanOrEqual(12);
    expect(received.every((b) => b.items.length <= 500)).toBe(true);
    // Pushing never waits on the network: 3,000 pushes take milliseconds, not 3,000 round trips.
    expect(pushMs).toBeLessThan(1_000);
  });

  it('sends logs to /api/logs and events to /api/task-runs/events', async () => {
    batches.length = 0;
    const reporter = new RunReporter(new ApiClient({ baseUrl }));
    reporter.logs.push({ flowRunId: 'run', taskRunId: null, level: 'info', message: 'hi', timestamp: new Date().toISOString() });
    reporter.events.push(event(1));
    await reporter.flush();
    expect(batches.map((b) => b.path).sort()).toEqual(['/api/logs', '/api/task-runs/events']);
  });
});
