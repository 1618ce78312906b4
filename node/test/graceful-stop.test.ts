import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel, UnavailableError, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from '../../test/harness/etcd.js';
import { startS3, type S3Server } from '../../test/harness/s3-server.js';
import { startClusterNode, tempDir, type NodeProcess } from '../../test/harness/node-process.js';
import { pollUntil } from '../../test/harness/wait.js';

class Note extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Note, 'GracefulStop.Note');

let etcd: EtcdCluster;
let s3: S3Server;
const clients: Client[] = [];
beforeAll(async () => {
  [etcd, s3] = await Promise.all([startEtcd({ members: 1 }), startS3()]);
});
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
});

async function client(n: NodeProcess): Promise<Client> {
  const c = await connect(n.url, { deadlineMs: 20_000 });
  clients.push(c);
  return c;
}

describe('loam node on SIGTERM (a Pod being deleted)', () => {
  it('refuses new calls at once, finishes the call in flight, flushes to S3 and exits 0 well within 60 s', async () => {
    const prefix = `/loam/graceful-${process.pid}`;
    // No upload before the stop (1 h interval): only the stop's flush can put the notes in S3.
    const s3Args = (dataDir: string) => ({
      dataDir,
      args: ['--node-name', 'lds-0', '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', 'graceful', '--s3-region', s3.region, '--upload-interval', '1h'],
      // A move held 3 s after its copy: a call in flight when the signal comes.
      env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, LOAM_FAILPOINTS: 'move-after-install:pause=3000' },
    });
    const a = await startClusterNode({ etcd: etcd.endpoints, prefix, ...s3Args(tempDir()) });
    const b = await startClusterNode({ etcd: etcd.endpoints, prefix });
    const c = await client(a);
    const viaB = await client(b);
    const notes: Note[] = [];
    for (let i = 0; i < 50; i++) notes.push(await c.persist(new Note(i), { backend: 1 }));
    const before = (await c.status()).find((s) => s.number === 1);
    expect(before?.reachable && before.s3?.backlogBytes).toBeGreaterThan(0);

    const moving = c.move(notes[0], 2);
    await pollUntil(async () => (await viaB.status()).find((s) => s.number === 2 && s.reachable && s.objects === 1), 'the move to be in flight (its copy on node 2)', 10_000);
    const t0 = Date.now();
    a.child.kill('SIGTERM');
    const exited = new Promise<number | null>((r) => a.child.once('exit', (code) => r(code)));
    await pollUntil(() => a.logs.some((l) => l.msg === 'stopping'), 'node 1 to begin stopping', 5_000);

    // New calls are refused from now on: a new client cannot connect, the old one's Get fails.
    await expect(connect(a.url, { connectTimeoutMs: 1_000 })).rejects.toBeInstanceOf(UnavailableError);
    await expect(c.conn.get({ dataset: 'default', oids: [notes[1].$oid!], readFromAny: false })).rejects.toBeInstanceOf(UnavailableError);
    // The call in flight finishes.
    expect((await moving).moved).toBe(1);
    expect(await exited).toBe(0);
    const took = Date.now() - t0;
    expect(took).toBeLessThan(25_000);
    expect(a.logs.some((l) => l.msg === 'flushed to S3')).toBe(true);
    expect(a.logs.some((l) => l.msg === 'calls still running at the end of the grace period: cancelled')).toBe(false);

    // The volume is gone (a new Pod elsewhere): the same name restores from S3 what the stop flushed.
    const again = await startClusterNode({ etcd: etcd.endpoints, prefix, port: a.port, peerPort: a.peerPort, ...s3Args(tempDir()) });
    expect(again.logs.find((l) => l.msg === 'ready')?.number).toBe(1);
    const c2 = await client(again);
    for (const n of notes) expect((await c2.get<Note>(n.$oid!)).n).toBe(n.n);
    expect((await c2.locate(notes[0].$oid!)).master.number).toBe(2);
  });
});
