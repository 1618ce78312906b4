import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel, LoamError, type Client } from '@loam/sdk';
import { startNode, waitFor, tempDir, type NodeProcess } from './harness/node-process.js';

class Entry extends Persistent {
  constructor(public worker: number, public seq: number, public payload: string) {
    super();
  }
}
registerModel(Entry, 'Crash.Entry');
class Counter extends Persistent {
  value = 0;
}
registerModel(Counter, 'Crash.Counter');

const nodes: NodeProcess[] = [];
const clients: Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const n of nodes.splice(0)) await n.kill();
});

describe('kill -9 under a stream of writes', () => {
  it('loses no acknowledged write, and the node restarts on the same data', async () => {
    const dataDir = tempDir();
    const node = await startNode({ dataDir });
    nodes.push(node);
    const client = await connect(node.url, { deadlineMs: 5000 });
    clients.push(client);
    const counter = await client.persist(new Counter());

    const acked = new Map<string, { worker: number; seq: number }>();
    let counterAcked = 0;
    let stop = false;
    const errors: unknown[] = [];
    const workers = Array.from({ length: 8 }, async (_, w) => {
      for (let seq = 0; !stop; seq++) {
        const e = new Entry(w, seq, 'p'.repeat(100 + ((w * 31 + seq) % 200)));
        try {
          await client.persist(e);
          acked.set(e.$oid!, { worker: w, seq });
        } catch (err) {
          errors.push(err);
          return;
        }
      }
    });
    const bumper = (async () => {
      while (!stop) {
        counter.value++;
        try {
          await client.save(counter);
          counterAcked = counter.value;
        } catch (err) {
          errors.push(err);
          return;
        }
      }
    })();

    await waitFor(() => acked.size >= 500 && counterAcked >= 20, 'enough acknowledged writes', 30_000);
    await node.kill(); // SIGKILL mid-stream
    stop = true;
    await Promise.all([...workers, bumper]);
    expect(errors.length).toBeGreaterThan(0); // writes in flight at the kill failed...
    for (const e of errors) expect(e).toBeInstanceOf(LoamError); // ...with typed errors, not hangs

    const again = await startNode({ dataDir });
    nodes.push(again);
    const reader = await connect(again.url);
    clients.push(reader);
    const oids = [...acked.keys()];
    for (let i = 0; i < oids.length; i += 200) {
      const got = await Promise.all(oids.slice(i, i + 200).map((o) => reader.get<Entry>(o)));
      for (const g of got) expect({ worker: g.worker, seq: g.seq }).toEqual(acked.get(g.$oid!));
    }
    const c = await reader.get<Counter>(counter.$oid!);
    expect(c.value).toBeGreaterThanOrEqual(counterAcked);
    expect(c.value).toBeLessThanOrEqual(counterAcked + 1); // at most the one write in flight
    // and the restarted node takes writes again
    const after = await reader.persist(new Entry(99, 0, 'after'));
    expect((await reader.get<Entry>(after.$oid!)).payload).toBe('after');
  });

  it('SIGTERM stops cleanly: exit 0, lock released, data kept', async () => {
    const dataDir = tempDir();
    const node = await startNode({ dataDir });
    nodes.push(node);
    const client = await connect(node.url);
    const e = await client.persist(new Entry(1, 1, 'kept'), { alias: 'crash-kept' });
    await client.close();
    expect(await node.stop()).toBe(0);
    expect(fs.existsSync(path.join(dataDir, 'LOCK'))).toBe(false);
    expect(node.logs.some((l) => l.msg === 'stopped')).toBe(true);
    const again = await startNode({ dataDir });
    nodes.push(again);
    const c2 = await connect(again.url);
    clients.push(c2);
    expect((await c2.getByAlias<Entry>('crash-kept')).$oid).toBe(e.$oid);
  });

  it('refuses a second node on the same data directory', async () => {
    const dataDir = tempDir();
    nodes.push(await startNode({ dataDir }));
    await expect(startNode({ dataDir, timeoutMs: 10_000 })).rejects.toThrow(/in use by process/);
  });
});
