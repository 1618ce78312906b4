/**
 * Drives the operator's reconcile from a test until the runtime (operator/src/runtime/) lands:
 * `reconcileUntil` runs passes of `reconcileDataStore` until a condition holds (a deadline, no
 * sleeps: each pass is followed by the requeue delay the pass asked for, capped), and
 * `startReconcileLoop` keeps passes running in the background while a test does something else.
 * Errors of a pass are kept (the last few are in the timeout message) and the loop goes on, as
 * the runtime's queue retries. One file, so the real runtime can be swapped in here later.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { HttpKubeApi, kubeEventRecorder, reconcileDataStore, type DataStoreKey, type KubeApi, type NodeAdmin, type ReconcileContext } from '@loam/operator';
import { pollUntil } from './wait.js';

export interface TestContextOptions {
  kubeconfig: string;
  admin: NodeAdmin;
  /** The API seam (e.g. a FailingKubeApi); default: over the kubeconfig. Events go through it too. */
  kube?: KubeApi;
  defaultImage?: string;
}

export interface TestContext extends ReconcileContext {
  kube: KubeApi;
  /** What the reconcile logged (warnings and errors), for failure messages. */
  logs: string[];
}

export function testContext(o: TestContextOptions): TestContext {
  const kc = new KubeConfig();
  kc.loadFromFile(o.kubeconfig);
  const kube = o.kube ?? new HttpKubeApi(kc);
  const logs: string[] = [];
  const note = (level: string) => (obj: object, msg: string) => {
    logs.push(`${level} ${msg} ${JSON.stringify(obj, (_k, v) => (v instanceof Error ? v.message : v))}`);
    if (logs.length > 200) logs.shift();
  };
  return {
    kc,
    kube,
    events: kubeEventRecorder(kube),
    admin: o.admin,
    defaultImage: o.defaultImage ?? 'loam:test',
    log: { info: () => undefined, warn: note('warn'), error: note('error') },
    logs,
  };
}

/** A NodeAdmin for tests with no nodes running: every call fails, loudly. */
export const NO_NODES_ADMIN: NodeAdmin = {
  status: async () => {
    throw new Error('NO_NODES_ADMIN: no node runs in this test');
  },
  startDrain: async () => {
    throw new Error('NO_NODES_ADMIN: no node runs in this test');
  },
  cancelDrain: async () => {
    throw new Error('NO_NODES_ADMIN: no node runs in this test');
  },
  close: async () => undefined,
};

/** The longest wait between passes while a pass asks to be requeued. */
const MAX_GAP_MS = 500;

/**
 * Runs passes until `cond()` (checked after each pass) returns a truthy value, which it resolves
 * with. Rejects after `timeoutMs` with the last errors of the passes.
 */
export async function reconcileUntil<T>(ctx: ReconcileContext, key: DataStoreKey, cond: () => T | Promise<T>, what: string, timeoutMs = 60_000): Promise<T> {
  const errors: string[] = [];
  let gap = 0;
  return pollUntil(
    async () => {
      if (gap) await new Promise((r) => setTimeout(r, gap));
      try {
        const r = await reconcileDataStore(ctx, key);
        gap = Math.min(r.requeueAfterMs ?? 100, MAX_GAP_MS);
      } catch (e) {
        errors.push(String(e));
        if (errors.length > 5) errors.shift();
        gap = 100;
      }
      return cond();
    },
    what,
    timeoutMs,
    { everyMs: 1, detail: () => `last reconcile errors:\n${errors.join('\n')}` },
  );
}

/** One pass; throws what the pass threw. */
export function reconcileOnce(ctx: ReconcileContext, key: DataStoreKey) {
  return reconcileDataStore(ctx, key);
}

export interface ReconcileLoop {
  /** Passes run so far, and their errors (the last 20). */
  passes(): number;
  errors(): string[];
  stop(): Promise<void>;
}

/** Keeps passes of `key` running (every requeue delay, at most MAX_GAP_MS apart) until stop(). */
export function startReconcileLoop(ctx: ReconcileContext, key: DataStoreKey): ReconcileLoop {
  let stopped = false;
  let passes = 0;
  const errors: string[] = [];
  let wake: (() => void) | undefined;
  const done = (async () => {
    while (!stopped) {
      let gap = MAX_GAP_MS;
      try {
        const r = await reconcileDataStore(ctx, key);
        gap = Math.min(r.requeueAfterMs ?? MAX_GAP_MS, MAX_GAP_MS);
      } catch (e) {
        errors.push(String(e));
        if (errors.length > 20) errors.shift();
        gap = 200;
      }
      passes++;
      if (!stopped) await new Promise<void>((r) => ((wake = r), setTimeout(r, gap)));
    }
  })();
  return {
    passes: () => passes,
    errors: () => [...errors],
    stop: async () => {
      stopped = true;
      wake?.();
      await done;
    },
  };
}
