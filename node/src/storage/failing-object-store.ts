/**
 * An ObjectStore that fails on purpose, for fault tests (as SlateDB tests against a failing
 * object store, and faulty-files.ts does for segment files): it wraps a real store and, per
 * operation and key pattern,
 *
 * - `fail`: rejects before calling the store (nothing happened);
 * - `fail-after`: calls the store and, when that succeeded, rejects anyway with
 *   `ObjectStoreUnavailableError` whose `outcomeUnknown` is true for writes (the call was
 *   applied, the caller cannot know it: a reply lost on the way back);
 * - `delay`: waits `ms` before calling the store (Infinity: until the call's signal aborts);
 * - `corrupt`: `get` only: returns the bytes with some of them flipped (what a damaged object
 *   or a bad disk under the store would serve).
 *
 * Faults apply in the order they were injected; the first that matches a call decides. A
 * `delay` lets the next matching fault apply after it, so "slow, then fail" composes.
 */
import {
  ObjectStoreUnavailableError,
  type ByteRange,
  type CallOptions,
  type ListOptions,
  type ObjectEntry,
  type ObjectInfo,
  type ObjectOp,
  type ObjectStore,
} from './object-store.js';

export type FaultAction = 'fail' | 'fail-after' | 'delay' | 'corrupt';

export interface ObjectFault {
  /** Which operations (default: all). */
  op?: ObjectOp | ObjectOp[];
  /** Only calls whose key (list: prefix; delete: any of its keys) matches: a RegExp, or a string the key starts with. */
  key?: RegExp | string;
  action: FaultAction;
  /** `fail`: what the call rejects with (default ObjectStoreUnavailableError, outcome known: not applied). */
  error?: (op: ObjectOp, key: string) => Error;
  /** `delay`: milliseconds (Infinity: until the call's signal aborts; without a signal, for ever). */
  ms?: number;
  /** `corrupt`: where in the returned bytes to start flipping (default: the middle) and how many (default 1). */
  offset?: number;
  bytes?: number;
  /** Matching calls to let through before this fault applies (default 0). */
  after?: number;
  /** How many matching calls it applies to (default: every one until removed). */
  times?: number;
}

interface Armed extends ObjectFault {
  seen: number;
  applied: number;
}

export class FailingObjectStore implements ObjectStore {
  private faults: Armed[] = [];
  /** Calls by operation, failed ones included. */
  readonly calls: Record<ObjectOp, number> = { create: 0, get: 0, head: 0, list: 0, delete: 0 };
  /** How many times a fault applied, by action. */
  readonly injected: Record<FaultAction, number> = { fail: 0, 'fail-after': 0, delay: 0, corrupt: 0 };

  constructor(readonly inner: ObjectStore) {}

  /** Arms a fault; the returned function removes it. */
  inject(fault: ObjectFault): () => void {
    if (fault.action === 'corrupt' && [fault.op ?? []].flat().some((o) => o !== 'get')) {
      throw new Error('a corrupt fault applies to get only: give op: "get"');
    }
    if (fault.action === 'delay' && !(typeof fault.ms === 'number' && fault.ms >= 0)) throw new Error('a delay fault needs ms >= 0');
    const armed: Armed = { ...fault, seen: 0, applied: 0 };
    this.faults.push(armed);
    return () => {
      this.faults = this.faults.filter((f) => f !== armed);
    };
  }

  clear(): void {
    this.faults = [];
  }

  create(key: string, body: Uint8Array, opts?: CallOptions): Promise<ObjectInfo> {
    return this.run('create', [key], opts, () => this.inner.create(key, body, opts));
  }

  get(key: string, range?: ByteRange, opts?: CallOptions): Promise<Buffer> {
    return this.run('get', [key], opts, () => this.inner.get(key, range, opts));
  }

  head(key: string, opts?: CallOptions): Promise<ObjectInfo> {
    return this.run('head', [key], opts, () => this.inner.head(key, opts));
  }

  list(prefix: string, opts?: ListOptions): Promise<ObjectEntry[]> {
    return this.run('list', [prefix], opts, () => this.inner.list(prefix, opts));
  }

  delete(keys: readonly string[], opts?: CallOptions): Promise<void> {
    return this.run('delete', keys, opts, () => this.inner.delete(keys, opts));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  // ---------------------------------------------------------------------------------------------

  /** The first armed fault, from index `from` on, that takes this call (counting it as seen). */
  private next(op: ObjectOp, keys: readonly string[], from: number): { fault: Armed; index: number } | undefined {
    for (let i = from; i < this.faults.length; i++) {
      const f = this.faults[i]!;
      if (f.op !== undefined && ![f.op].flat().includes(op)) continue;
      if (f.key !== undefined && !keys.some((k) => (typeof f.key === 'string' ? k.startsWith(f.key) : f.key!.test(k)))) continue;
      if (f.seen++ < (f.after ?? 0)) continue;
      if (f.applied >= (f.times ?? Infinity)) continue;
      f.applied++;
      this.injected[f.action]++;
      return { fault: f, index: i };
    }
    return undefined;
  }

  private async run<T>(op: ObjectOp, keys: readonly string[], opts: CallOptions | undefined, call: () => Promise<T>): Promise<T> {
    this.calls[op]++;
    const key = keys[0] ?? '';
    let from = 0;
    for (;;) {
      const hit = this.next(op, keys, from);
      if (!hit) return call();
      const f = hit.fault;
      switch (f.action) {
        case 'delay':
          await wait(f.ms!, opts?.signal);
          from = hit.index + 1;
          continue;
        case 'fail':
          throw f.error ? f.error(op, key) : new ObjectStoreUnavailableError(`${op} ${key}: injected failure (not applied)`, op, key, 'InjectedFailure', false);
        case 'fail-after': {
          await call();
          const write = op === 'create' || op === 'delete';
          throw new ObjectStoreUnavailableError(`${op} ${key}: injected failure after the call succeeded${write ? ' (it was applied)' : ''}`, op, key, 'InjectedLostReply', write);
        }
        case 'corrupt': {
          const data = (await call()) as unknown as Buffer;
          return corrupt(data, f.offset, f.bytes ?? 1) as unknown as T;
        }
      }
    }
  }
}

function corrupt(data: Buffer, offset: number | undefined, n: number): Buffer {
  if (data.length === 0) return data;
  const out = Buffer.from(data); // a copy: the caller's view of the store stays unharmed
  const start = Math.min(offset ?? Math.floor(out.length / 2), out.length - 1);
  for (let i = start; i < Math.min(out.length, start + n); i++) out[i] = out[i]! ^ 0xff;
  return out;
}

function wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
