import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Persistent, registerModel } from '@loam/sdk';
import { waitFor } from './harness/node-process.js';
import { clusterFixture, untilDead } from './harness/cluster-fixture.js';
import { startS3, type S3Server } from './harness/s3-server.js';

class Entry extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Entry, 'S3Fencing.Entry');

const fx = clusterFixture('s3-fencing');
let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});

const s3Args = (name: string, prefix: string) => ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--s3-region', s3.region, '--upload-interval', '1s', '--node-name', name];
const env = () => ({ AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey });

/** Every file versitygw holds under `prefix`, with its last modification time. */
function filesUnder(prefix: string): { key: string; mtime: number }[] {
  const root = `${s3.dir}/${s3.bucket}/${prefix}`;
  return (fs.readdirSync(root, { recursive: true }) as string[])
    .map((f) => ({ key: f, stat: fs.statSync(`${root}/${f}`) }))
    .filter((f) => f.stat.isFile())
    .map((f) => ({ key: f.key, mtime: f.stat.mtimeMs }));
}

describe('two processes with one node identity', () => {
  it('the older is fenced: it stops, writes nothing more to S3, and the newer loses nothing it acknowledged', async () => {
    const prefix = fx.prefix();
    const s3Prefix = `fencing-${process.pid}`;
    const older = await fx.node(prefix, { args: s3Args('pod-0', s3Prefix), env: env() });
    const c1 = await fx.client(older);
    const before: Entry[] = [];
    for (let i = 0; i < 50; i++) before.push(await c1.persist(new Entry(i)));
    await c1.flush();

    // A second start of the same identity on another (empty) volume: a failover while the old
    // pod still runs. It restores from S3 and takes generation 2.
    const takeover = Date.now();
    const newer = await fx.node(prefix, { args: s3Args('pod-0', s3Prefix), env: env() });
    await untilDead(older).catch((e: Error) => {
      throw new Error(`${e.message}\nolder:\n${older.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}\nnewer:\n${newer.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`);
    });
    expect(older.child.exitCode).toBe(1);
    expect(older.logs.map((l) => String(l.msg)).filter((m) => /fenced|took over/.test(m)), JSON.stringify(older.logs.slice(-8))).toContain("stopping: a later start of this node identity took over (generation superseded); nothing more is uploaded, deleted or acknowledged");

    const c2 = await fx.client(newer);
    const after: Entry[] = [];
    for (let i = 0; i < 20; i++) after.push(await c2.persist(new Entry(100 + i)));
    await c2.flush();
    for (const e of [...before, ...after]) expect((await c2.get<Entry>(e.$oid!)).n).toBe(e.n);

    // The fenced process changed nothing in S3 after the takeover, and no key was written twice
    // (every generation writes keys of its own, each once).
    const files = filesUnder(s3Prefix);
    const lateFromOlder = files.filter((f) => /\.g1$|manifests\/0000000001-/.test(f.key) && f.mtime > takeover);
    expect(lateFromOlder).toEqual([]);
    expect(files.some((f) => /\.g2$/.test(f.key))).toBe(true);

    // Everything the newer acknowledged survives the loss of its volume too.
    await newer.kill();
    const third = await fx.node(prefix, { args: s3Args('pod-0', s3Prefix), env: env() });
    const c3 = await fx.client(third);
    await waitFor(async () => (await c3.get<Entry>(after[19].$oid!).catch(() => undefined))?.n === 119, 'the third start to serve', 10_000);
    for (const e of [...before, ...after]) expect((await c3.get<Entry>(e.$oid!)).n).toBe(e.n);
  });
});
