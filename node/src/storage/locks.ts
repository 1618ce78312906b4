/**
 * Locks held by distributed-transaction parts on this node, with waits that never spin.
 *
 * Contract:
 * - `acquire` is synchronous, so a caller that validated and acquired in one step cannot be
 *   interleaved by another commit.
 * - `released(txid)` resolves when `txid` releases its locks (at once when it holds none).
 *   Waiters are woken by `release`, never by polling: a wait yields the event loop.
 * - Deadlock cannot happen because prepares follow wait-die (`mayWait`): a transaction waits only
 *   for younger ones (a larger txid: the SDK puts a millisecond timestamp first) and a younger
 *   one meeting an older lock gives up at once with a conflict the SDK retries. Waits therefore
 *   always point from older to younger and can form no cycle. Plain commits hold no locks while
 *   they wait, so they may wait for anyone.
 */
export class LockTable {
  private readonly holders = new Map<string, string>(); // oid -> txid
  private readonly byTx = new Map<string, { oids: string[]; done: Promise<void>; wake: () => void }>();

  get size(): number {
    return this.holders.size;
  }

  holder(oid: string): string | undefined {
    return this.holders.get(oid);
  }

  /** Takes every lock of `oids` for `txid` (the caller checked that none is held by another). */
  acquire(txid: string, oids: Iterable<string>): void {
    let entry = this.byTx.get(txid);
    if (!entry) {
      let wake!: () => void;
      const done = new Promise<void>((r) => (wake = r));
      entry = { oids: [], done, wake };
      this.byTx.set(txid, entry);
    }
    for (const o of oids) {
      const h = this.holders.get(o);
      if (h !== undefined && h !== txid) throw new Error(`invariant: ${o} is locked by ${h}, not free for ${txid}`);
      if (h === undefined) {
        this.holders.set(o, txid);
        entry.oids.push(o);
      }
    }
  }

  /** Releases every lock of `txid` and wakes whoever waits for it. */
  release(txid: string): void {
    const entry = this.byTx.get(txid);
    if (!entry) return;
    this.byTx.delete(txid);
    for (const o of entry.oids) if (this.holders.get(o) === txid) this.holders.delete(o);
    entry.wake();
  }

  released(txid: string): Promise<void> {
    return this.byTx.get(txid)?.done ?? Promise.resolve();
  }

  /** The transactions other than `self` that lock any of `oids`. */
  blockers(oids: Iterable<string>, self?: string): Set<string> {
    const out = new Set<string>();
    if (this.holders.size === 0) return out;
    for (const o of oids) {
      const h = this.holders.get(o);
      if (h !== undefined && h !== self) out.add(h);
    }
    return out;
  }

  /**
   * One step of waiting until none of `oids` is locked by a transaction other than `self`:
   * synchronously the outcome (`blockers` empty: free; `refused`: `mayWait` said no to that
   * holder; else the `deadline`, epoch ms, passed), or a promise that settles when a blocker
   * releases or the deadline comes, after which the caller asks again. Callers loop
   * `while ((s = waitStep(...)) instanceof Promise) await s;` so the last check and whatever they
   * do next (validate, acquire) run in one synchronous step, with no interleaving between.
   */
  waitStep(oids: readonly string[], deadline: number, self?: string, mayWait: (holder: string) => boolean = () => true): WaitOutcome | Promise<void> {
    const blockers = this.blockers(oids, self);
    if (blockers.size === 0) return { blockers };
    for (const b of blockers) if (!mayWait(b)) return { blockers, refused: b };
    const left = deadline - Date.now();
    if (left <= 0) return { blockers };
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      Promise.race([...blockers].map((t) => this.released(t))),
      new Promise<void>((r) => (timer = setTimeout(r, left))),
    ]).finally(() => clearTimeout(timer));
  }
}

export interface WaitOutcome {
  blockers: Set<string>;
  refused?: string;
}

/** Wait-die order: a transaction may wait for `holder` only if it is older (smaller id). */
export function olderThan(txid: string, holder: string): boolean {
  return txid < holder;
}
