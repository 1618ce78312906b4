import { describe, expect, it } from 'vitest';
import { newOid, newTxid, ConflictError } from '@loam/sdk';
import { engineFixture, put } from './engine-fixture.js';

const fixture = engineFixture('locks');
const open = async () => fixture.open(fixture.tmp());

/** Resolves with how long a 0 ms timer took to fire: how long the event loop was blocked. */
function loopDelay(): Promise<number> {
  const t0 = performance.now();
  return new Promise((r) => setTimeout(() => r(performance.now() - t0), 0));
}

describe('prepared-transaction locks', () => {
  it('a commit meeting a transaction being prepared waits without blocking the event loop', async () => {
    const e = await open();
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const txid = newTxid();
    const preparing = e.prepare(txid, 1, { dataset: 'default', writes: [put(a, 'tx', 1)] });
    // Microtasks only: the prepare has taken its lock but its record cannot be durable yet.
    for (let i = 0; i < 100 && e.lockedBy(a) !== txid; i++) await Promise.resolve();
    expect(e.lockedBy(a)).toBe(txid);
    const committing = e.commit({ dataset: 'default', writes: [put(a, 'plain', 1)] });
    let settled = false;
    void committing.then(() => (settled = true), () => (settled = true));
    // Before the fix the commit spun on microtasks until its 7 s lock wait ran out.
    expect(await loopDelay()).toBeLessThan(50);
    expect(await preparing).toEqual([2]);
    expect(await loopDelay()).toBeLessThan(50);
    expect(settled).toBe(false); // still waiting for the decision
    await e.finish(txid, false);
    expect(await committing).toEqual([2]);
    expect((await e.get('default', [a])).objects[0].state.toString()).toBe('plain');
  });

  it('two transactions taking two nodes\' objects in opposite order cannot deadlock (wait-die)', async () => {
    const n1 = await open();
    const n2 = await open();
    const a = newOid(1), b = newOid(2);
    await n1.commit({ dataset: 'default', writes: [put(a, '100')] });
    await n2.commit({ dataset: 'default', writes: [put(b, '100')] });
    const older = newTxid(Date.now() - 1);
    const younger = newTxid(Date.now());
    // Each has its first part prepared, so each holds one lock the other needs.
    await n1.prepare(older, 1, { dataset: 'default', writes: [put(a, '90', 1)] });
    await n2.prepare(younger, 2, { dataset: 'default', writes: [put(b, '90', 1)] });
    const t0 = performance.now();
    const olderSecond = n2.prepare(older, 1, { dataset: 'default', writes: [put(b, '110', 1)] });
    // The younger one gives way at once with a conflict the SDK retries...
    await expect(n1.prepare(younger, 2, { dataset: 'default', writes: [put(a, '110', 1)] })).rejects.toBeInstanceOf(ConflictError);
    // ...its coordinator aborts it, which frees the older one's way.
    await n2.finish(younger, false);
    expect(await olderSecond).toEqual([2]);
    expect(performance.now() - t0).toBeLessThan(100);
    await n1.finish(older, true);
    await n2.finish(older, true);
    expect((await n1.get('default', [a])).objects[0].state.toString()).toBe('90');
    expect((await n2.get('default', [b])).objects[0].state.toString()).toBe('110');
  });

  it('a duplicate prepare of a transaction still being prepared gets the same answer', async () => {
    const e = await open();
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const txid = newTxid();
    const [x, y] = await Promise.all([
      e.prepare(txid, 1, { dataset: 'default', writes: [put(a, 'tx', 1)] }),
      e.prepare(txid, 1, { dataset: 'default', writes: [put(a, 'tx', 1)] }),
    ]);
    expect(x).toEqual([2]);
    expect(y).toEqual([2]);
    await e.finish(txid, true);
    expect(e.lockedBy(a)).toBeUndefined();
  });
});
