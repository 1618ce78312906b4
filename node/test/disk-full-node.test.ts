import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { credentials, makeGenericClientConstructor } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { LoamNode } from '../dist/server.js';
import { createLogger } from '../dist/logger.js';
import { LocalFiles } from '../dist/storage/segment-files.js';
import { FaultyFiles } from '../dist/storage/faulty-files.js';
import { connect, Persistent, registerModel, UnavailableError, type Client } from '@loam/sdk';

class Note extends Persistent {
  constructor(public text: string) {
    super();
  }
}
registerModel(Note, 'DiskFull.Note');

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const HealthClient = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health');
function health(port: number): Promise<string> {
  const hc = new HealthClient(`127.0.0.1:${port}`, credentials.createInsecure());
  return new Promise<string>((resolve, reject) => {
    (hc as unknown as { check(req: object, opts: object, cb: (e: Error | null, r?: { status: string }) => void): void })
      .check({ service: '' }, { deadline: Date.now() + 3000 }, (e, r) => (e ? reject(e) : resolve(r!.status)));
  }).finally(() => hc.close());
}
async function until(cond: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('a node on a full disk', () => {
  it('refuses writes (typed), says NOT_SERVING and why, serves reads, and recovers when space is freed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-diskfull-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const files = new FaultyFiles(new LocalFiles(path.join(dir, 'log')));
    const node = await LoamNode.start({ dataDir: dir, port: 0, metricsPort: -1, files, logger: createLogger('silent') });
    cleanups.push(() => node.stop());
    const c: Client = await connect(`loam://127.0.0.1:${node.port}/default`, { deadlineMs: 5000 });
    cleanups.push(() => c.close());
    const kept = await c.persist(new Note('kept'));
    expect(await health(node.port)).toBe('SERVING');

    files.inject({ op: 'write', code: 'ENOSPC' });
    const err = await c.persist(new Note('refused')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(await health(node.port)).toBe('NOT_SERVING');
    const metrics = await node.metrics.registry.metrics();
    expect(metrics).toMatch(/loam_writes_refused\{reason="ENOSPC"\} 1/);
    expect((await c.get<Note>(kept.$oid!)).text).toBe('kept'); // reads go on

    files.clear(); // space freed: the probe notices without any write from a client
    await until(async () => (await health(node.port)) === 'SERVING', 'health SERVING again');
    expect(await node.metrics.registry.metrics()).not.toMatch(/loam_writes_refused\{/);
    const after = await c.persist(new Note('after'));
    expect((await c.get<Note>(after.$oid!)).text).toBe('after');
  });
});
