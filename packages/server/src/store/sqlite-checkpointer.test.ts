import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testStore } from '@tessera/testing';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore } from './dialect.js';
import { startCheckpointer } from './sqlite-checkpointer.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function freshFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-ckpt-'));
  dirs.push(dir);
  return join(dir, 'db.sqlite');
}

describe.skipIf(testStore() === 'postgres')('the SQLite checkpointer thread', () => {
  it('moves committed WAL frames into the database while the writer keeps its connection, so the WAL is reused', async () => {
    const file = freshFile();
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('create table t (id integer primary key, v text)');
    const insert = db.prepare('insert into t (v) values (?)');
    const reports: { log: number; checkpointed: number }[] = [];
    const done = new Promise<void>((resolve) => {
      const c = startCheckpointer(file, {
        intervalMs: 20,
        onCheckpoint: (r) => {
          reports.push(r);
          if (r.log > 0 && r.checkpointed === r.log) void c.close().then(resolve);
        },
      });
      db.transaction(() => {
        for (let i = 0; i < 2_000; i++) insert.run('x'.repeat(500));
      })();
    });
    await done;
    expect(reports.some((r) => r.log > 100 && r.checkpointed === r.log)).toBe(true);
    // Everything is in the database: the next write starts the WAL over instead of growing it.
    const before = statSync(`${file}-wal`).size;
    db.transaction(() => {
      for (let i = 0; i < 200; i++) insert.run('y'.repeat(500));
    })();
    expect(statSync(`${file}-wal`).size).toBeLessThanOrEqual(before);
    expect(db.prepare('select count(*) as n from t').get()).toEqual({ n: 2_200 });
    db.close();
  });

  it('restarts a long WAL even while writes never pause, so the file stops growing', async () => {
    const file = freshFile();
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('create table t (id integer primary key, v text)');
    const insert = db.prepare('insert into t (v) values (?)');
    const c = startCheckpointer(file, { intervalMs: 10, restartFrames: 50 });
    // A transaction every millisecond or so for 1.5 s, like a busy server's group commits: without a
    // restart the WAL would hold every frame written, several MB.
    const until = Date.now() + 1_500;
    let rows = 0;
    while (Date.now() < until) {
      db.transaction(() => {
        for (let i = 0; i < 20; i++) insert.run('z'.repeat(400));
      })();
      rows += 20;
      await new Promise((r) => setTimeout(r, 1));
    }
    await c.close();
    const walBytes = statSync(`${file}-wal`).size;
    const written = rows * 400;
    expect(walBytes).toBeLessThan(written / 4);
    db.close();
  });

  it('stops with the store: destroy() ends the thread and closes both connections', async () => {
    const store = openStore(freshFile());
    await store.db.schema.createTable('t').addColumn('v', 'text').execute();
    await store.db
      .insertInto('t' as never)
      .values({ v: 'a' } as never)
      .execute();
    await store.destroy();
    // A closed store leaves the file openable and whole.
    const check = new Database(store.description.replace(/^sqlite /, ''), { readonly: true });
    expect(check.prepare('select v from t').all()).toEqual([{ v: 'a' }]);
    check.close();
  });
});
