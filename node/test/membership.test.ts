import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, UnavailableError } from '@loam/sdk';
import { EmbeddedMetaStore } from '../dist/meta/embedded-meta-store.js';
import { META_KEYS, type MetaLease, type MetaStore } from '../dist/meta/meta-store.js';
import { Membership } from '../dist/cluster/membership.js';
import { createLogger } from '../dist/logger.js';

/** A metadata store that can be switched off: every call then fails as an unreachable etcd does. */
class Switchable implements MetaStore {
  readonly kind = 'embedded' as const;
  down = true;
  /** Calls refused while down. */
  refused = 0;
  constructor(readonly inner = new EmbeddedMetaStore()) {}
  private gate<T>(fn: () => Promise<T>): Promise<T> {
    if (this.down) this.refused++;
    return this.down ? Promise.reject(new UnavailableError('metadata store (test) is down')) : fn();
  }
  get(k: string) { return this.gate(() => this.inner.get(k)); }
  list(p: string) { return this.gate(() => this.inner.list(p)); }
  put(k: string, v: string, l?: MetaLease) { return this.gate(() => this.inner.put(k, v, l)); }
  createIfAbsent(k: string, v: string, l?: MetaLease) { return this.gate(() => this.inner.createIfAbsent(k, v, l)); }
  compareAndSet(k: string, e: string | undefined, v: string | undefined) { return this.gate(() => this.inner.compareAndSet(k, e, v)); }
  delete(k: string) { return this.gate(() => this.inner.delete(k)); }
  deleteMany(k: string[]) { return this.gate(() => this.inner.deleteMany(k)); }
  lease(ttl: number) { return this.gate(() => this.inner.lease(ttl)); }
  close() { return this.inner.close(); }
}

const log = createLogger('silent');
const self = (number = 1, id = 'node-a') => ({ id, number, address: `127.0.0.1:${7000 + number}`, startedAt: new Date().toISOString() });
const joined: Membership[] = [];
afterEach(async () => {
  for (const m of joined.splice(0)) await m.leave();
});

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('membership while the metadata store is unreachable', () => {
  it('join returns at the first failed attempt; without a view only this node itself is known', async () => {
    const meta = new Switchable();
    const t0 = Date.now();
    const { membership: m, joined: ok } = await Membership.join(meta, self(), log, { waitMs: 10_000 });
    joined.push(m);
    expect(ok).toBe(false);
    expect(Date.now() - t0).toBeLessThan(2000); // not the 10 s wait: the store said no
    expect(m.registered).toBe(false);
    expect((await m.byNumber(1))?.id).toBe('node-a');
    // Another node, or who serves this node's home: unknown, so typed errors, never "absent"
    // (an absent replica node would be dropped from replica sets).
    await expect(m.byNumber(2)).rejects.toBeInstanceOf(UnavailableError);
    await expect(m.homeServer(1)).rejects.toBeInstanceOf(UnavailableError);
    await expect(m.backends()).rejects.toBeInstanceOf(UnavailableError);
  });

  it('registers in the background once the store is back, and says so', async () => {
    const meta = new Switchable();
    const seen: boolean[] = [];
    const { membership: m } = await Membership.join(meta, self(), log, { hooks: { onRegistered: (up) => seen.push(up) } });
    joined.push(m);
    await meta.inner.put(META_KEYS.nodeNumber(1), 'node-a');
    meta.down = false;
    await until(() => m.registered, 'registration');
    expect(seen).toEqual([true]);
    expect(await meta.inner.get(META_KEYS.member('node-a'))).toContain('"number":1');
    expect((await m.backends()).map((b) => b.id)).toEqual(['node-a']);
    expect((await m.homeServer(1))?.id).toBe('node-a');
    expect(await m.byNumber(2)).toBeUndefined(); // with a view, a node that is not there is absent
  });

  it('a number that belongs to another node: rejected at join if the store answers, fatal later if not', async () => {
    const up = new Switchable();
    up.down = false;
    await up.inner.put(META_KEYS.nodeNumber(1), 'node-b');
    await expect(Membership.join(up, self(), log)).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await up.inner.get(META_KEYS.member('node-a'))).toBeUndefined();

    const meta = new Switchable();
    await meta.inner.put(META_KEYS.nodeNumber(1), 'node-b');
    const fatal: Error[] = [];
    const { membership: m, joined: ok } = await Membership.join(meta, self(), log, { hooks: { onFatal: (e) => fatal.push(e) } });
    joined.push(m);
    expect(ok).toBe(false);
    meta.down = false;
    await until(() => fatal.length > 0, 'the fatal error');
    expect(fatal[0]).toBeInstanceOf(InvalidArgumentError);
    expect(fatal[0].message).toMatch(/belongs to node node-b/);
    expect(m.registered).toBe(false);
    expect(await meta.inner.get(META_KEYS.member('node-a'))).toBeUndefined();
  });

  it('a first start waits for the store to allocate a number', async () => {
    const meta = new Switchable();
    let number: number | undefined;
    const p = Membership.allocateNumber(meta, 'node-c', log).then((n) => (number = n));
    await until(() => meta.refused >= 2, 'a retry'); // it tried again instead of giving up
    expect(number).toBeUndefined();
    meta.down = false;
    await p;
    expect(number).toBe(1);
    expect(await meta.inner.get(META_KEYS.nodeNumber(1))).toBe('node-c');
    const stopped = new AbortController();
    const down = new Switchable();
    const q = Membership.allocateNumber(down, 'node-d', log, stopped.signal);
    stopped.abort();
    expect(await q).toBeUndefined();
  });
});
