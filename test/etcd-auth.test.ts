import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3, Range } from 'etcd3';
import { connect, Persistent, registerModel, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startClusterNode, startNode, tempDir } from './harness/node-process.js';
import { pollUntil } from './harness/wait.js';

class Item extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Item, 'EtcdAuth.Item');

const PREFIX = `/loam/etcd-auth-${process.pid}`;
const ROOT_PASSWORD = 'root-secret-1';
const LOAM_PASSWORD = 'loam-secret-2';
let etcd: EtcdCluster;
const clients: Client[] = [];

/** etcd with auth on: root, and user `loam` whose role may read and write only PREFIX. */
beforeAll(async () => {
  etcd = await startEtcd({ members: 1 });
  const admin = new Etcd3({ hosts: etcd.endpoints });
  try {
    await admin.role('root').create();
    await admin.user('root').create(ROOT_PASSWORD);
    await admin.user('root').addRole('root');
    await admin.role('loam').create();
    await admin.role('loam').grant({ permission: 'Readwrite', range: Range.prefix(PREFIX) });
    await admin.user('loam').create(LOAM_PASSWORD);
    await admin.user('loam').addRole('loam');
    await admin.auth.authEnable();
  } finally {
    admin.close();
  }
  // Auth is on: without credentials etcd refuses (so the nodes below really use theirs).
  const anon = new Etcd3({ hosts: etcd.endpoints });
  try {
    await expect(anon.get(`${PREFIX}/x`).string()).rejects.toThrow();
  } finally {
    anon.close();
  }
});
afterAll(async () => {
  for (const c of clients) await c.close();
});

const creds = { LOAM_ETCD_USERNAME: 'loam', LOAM_ETCD_PASSWORD: LOAM_PASSWORD };
/** The environment without any LOAM_ETCD_* a developer may have set. */
const clean = { LOAM_ETCD_USERNAME: '', LOAM_ETCD_PASSWORD: undefined as unknown as string };

describe('loam node and loam dev on an etcd with auth enabled', () => {
  it('work with the right credentials, from the environment or a password file', async () => {
    const a = await startClusterNode({ etcd: etcd.endpoints, prefix: `${PREFIX}/one`, env: creds });
    const file = path.join(tempDir('loam-etcd-pw-'), 'password');
    fs.writeFileSync(file, `${LOAM_PASSWORD}\n`, { mode: 0o600 });
    const b = await startClusterNode({
      etcd: etcd.endpoints, prefix: `${PREFIX}/one`, env: { LOAM_ETCD_USERNAME: 'loam' },
      args: ['--etcd-password-file', file],
    });
    const c = await connect(a.url, { deadlineMs: 10_000 });
    clients.push(c);
    // Both registered through etcd: each is a member the other knows.
    await pollUntil(async () => (await c.backends()).length === 2, 'both nodes to be members', 15_000);
    const item = await c.persist(new Item(5), { backend: 2 });
    const viaB = await connect(b.url, { deadlineMs: 10_000 });
    clients.push(viaB);
    expect((await viaB.get<Item>(item.$oid!)).n).toBe(5);
    expect(a.logs.find((l) => l.msg === 'ready')?.registered).toBe(true);

    const dev = await startNode({ args: ['--etcd', etcd.endpoints.join(','), '--prefix', `${PREFIX}/dev`, '--nodes', '2'], env: creds });
    const d = await connect(dev.url, { deadlineMs: 10_000 });
    clients.push(d);
    await pollUntil(async () => (await d.backends()).length === 2, 'both dev nodes to be members', 15_000);
  });

  it('fail at start with a clear error, without hanging, on a wrong password or none', async () => {
    for (const env of [{ ...creds, LOAM_ETCD_PASSWORD: 'wrong' }, clean, { ...creds, LOAM_ETCD_USERNAME: 'nobody' }]) {
      const t0 = Date.now();
      await expect(startClusterNode({ etcd: etcd.endpoints, prefix: `${PREFIX}/bad`, env, timeoutMs: 20_000 }))
        .rejects.toThrow(/node exited with 1 before ready:[\s\S]*loam: etcd refused access/);
      expect(Date.now() - t0).toBeLessThan(15_000);
    }
    // A user whose role does not cover the prefix: refused as well.
    await expect(startClusterNode({ etcd: etcd.endpoints, prefix: '/elsewhere', env: creds, timeoutMs: 20_000 }))
      .rejects.toThrow(/etcd refused access: .*permission denied/);
    await expect(startNode({ args: ['--etcd', etcd.endpoints.join(','), '--prefix', `${PREFIX}/dev-bad`], env: { ...creds, LOAM_ETCD_PASSWORD: 'wrong' }, timeoutMs: 20_000 }))
      .rejects.toThrow(/etcd refused access/);
  });

  it('never take the password as a flag value, and refuse half-given credentials', async () => {
    await expect(startClusterNode({ etcd: etcd.endpoints, prefix: `${PREFIX}/x`, env: clean, args: ['--etcd-password', LOAM_PASSWORD] }))
      .rejects.toThrow(/unknown option '--etcd-password'/);
    await expect(startClusterNode({ etcd: etcd.endpoints, prefix: `${PREFIX}/x`, env: { LOAM_ETCD_USERNAME: '', LOAM_ETCD_PASSWORD: LOAM_PASSWORD } }))
      .rejects.toThrow(/no user: add --etcd-username/);
    await expect(startClusterNode({ etcd: etcd.endpoints, prefix: `${PREFIX}/x`, env: { LOAM_ETCD_USERNAME: 'loam', LOAM_ETCD_PASSWORD: undefined as unknown as string } }))
      .rejects.toThrow(/has no password/);
  });
});
