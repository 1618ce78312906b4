import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Etcd3, type IOptions } from 'etcd3';
import { ensureEtcd, startEtcd, type EtcdCluster } from './harness/etcd.js';
import { waitFor } from './harness/node-process.js';

const clusters: EtcdCluster[] = [];
const clients: Etcd3[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const c of clusters.splice(0)) await c.stop();
});

async function cluster(members: 1 | 3): Promise<EtcdCluster> {
  const c = await startEtcd({ members });
  clusters.push(c);
  return c;
}

/**
 * Every unary call gets a 3 s deadline by default, so no test can hang on etcd; streams get none.
 * grpc-js shares subchannels between clients process-wide and backs off reconnecting to a member that was
 * down (1 s, growing to 120 s): a fresh client to a restarted member would inherit that backoff and fail
 * with UNAVAILABLE "No connection established" (then etcd3's circuit breaker shuts that host out for 5 s).
 * A local subchannel pool and a short backoff cap make a restarted member usable as soon as it is up.
 */
function client(hosts: string[], extra: Partial<IOptions> = {}): Etcd3 {
  const c = new Etcd3({
    hosts,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 3000 }),
    grpcOptions: {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
    ...extra,
  });
  clients.push(c);
  return c;
}

const soon = (ms: number) => ({ deadline: Date.now() + ms });

describe('etcd harness', () => {
  it('finds (or installs) a working etcd binary', async () => {
    const bin = await ensureEtcd();
    expect(fs.existsSync(bin)).toBe(true);
    // Cached per process: a second call does not install or probe again.
    expect(await ensureEtcd()).toBe(bin);
  });

  it('single member: put/get, and a revoked lease takes its key with it', async () => {
    const c = await cluster(1);
    expect(c.endpoints).toHaveLength(1);
    expect(c.endpoints[0]).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const etcd = client(c.endpoints);
    await etcd.put('greeting').value('hello');
    expect(await etcd.get('greeting').string()).toBe('hello');

    const lease = etcd.lease(10);
    await lease.put('ephemeral').value('x');
    expect(await etcd.get('ephemeral').string()).toBe('x');
    // Revoke before close: closing the client alone does not stop the lease's keepalives.
    await lease.revoke();
    expect(await etcd.get('ephemeral').string()).toBeNull();
  });

  it('three members: survives one loss, refuses writes without quorum, recovers with its data', async () => {
    const c = await cluster(3);
    expect(new Set(c.endpoints).size).toBe(3);
    for (let i = 0; i < 3; i++) expect(await c.isHealthy(i)).toBe(true);
    const etcd = client(c.endpoints);
    await etcd.put('k/a').value('1');
    expect(await etcd.get('k/a').string()).toBe('1');

    // One member down: 2 of 3 is a quorum. A leader election may be under way, so wait with a deadline.
    await c.stopMember(0);
    expect(c.members[0]!.child!.exitCode !== null || c.members[0]!.child!.signalCode !== null).toBe(true);
    await waitFor(() => etcd.put('k/b').value('2').options(soon(1000)).then(() => true), 'a write with one member down', 10_000);
    expect(await etcd.get('k/b').string()).toBe('2');
    expect(await etcd.get('k/a').string()).toBe('1');

    // Two down: no quorum, so a write cannot commit and fails once its deadline passes.
    await c.stopMember(1);
    const t0 = Date.now();
    const err = await etcd.put('k/c').value('3').options(soon(1500)).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    const elapsed = Date.now() - t0;
    expect(err, 'a put without quorum must fail').toBeInstanceOf(Error);
    expect(elapsed).toBeLessThan(5000);

    // Back to three: writes work again and nothing acknowledged was lost.
    await c.startMember(0);
    await c.startMember(1);
    for (let i = 0; i < 3; i++) await waitFor(() => c.isHealthy(i), `member ${i} healthy`, 10_000);
    // The client's per-host circuit breakers may still be open for a few seconds after the failures.
    await waitFor(() => etcd.put('k/d').value('4').options(soon(1000)).then(() => true), 'a write after recovery', 15_000);
    expect(await etcd.get('k/a').string()).toBe('1');
    expect(await etcd.get('k/b').string()).toBe('2');
    expect(await etcd.get('k/d').string()).toBe('4');
    // The restarted members have the data too (serializable = answered from the member's own store).
    for (const ep of [c.endpoints[0]!, c.endpoints[1]!]) {
      const one = client([ep]);
      await waitFor(async () => (await one.get('k/d').serializable(true).string()) === '4', `k/d replicated to ${ep}`, 10_000);
    }
  });

  it('three members: a cluster killed outright restarts on its data dirs; a lone member only listens', async () => {
    const c = await cluster(3);
    const etcd = client(c.endpoints);
    await etcd.put('kept').value('yes');
    await Promise.all([0, 1, 2].map((i) => c.stopMember(i, 'SIGKILL')));

    await c.startMember(2); // 1 of 3: no quorum, resolves once it listens
    expect(c.members[2]!.child!.exitCode).toBeNull();
    expect(await c.isHealthy(2)).toBe(false);
    await c.startMember(0); // 2 of 3: resolves once healthy
    expect(await c.isHealthy(0)).toBe(true);
    await c.startMember(1);
    expect(await c.isHealthy(1)).toBe(true);

    const fresh = client(c.endpoints);
    expect(await fresh.get('kept').string()).toBe('yes');
    await fresh.put('after').value('restart');
    expect(await fresh.get('after').string()).toBe('restart');
  });

  it('stop() removes the processes and the temp dir', async () => {
    const c = await startEtcd({ members: 1 });
    const child = c.members[0]!.child!;
    expect(fs.existsSync(c.dir)).toBe(true);
    await c.stop();
    expect(child.exitCode !== null || child.signalCode !== null).toBe(true);
    expect(fs.existsSync(c.dir)).toBe(false);
    await c.stop(); // idempotent
  });
});
