/**
 * A keyed, de-duplicating work queue with per-key rate-limited requeue, in the manner of
 * client-go's workqueue (which client-node does not have):
 *
 * - a key queued twice before it runs runs once;
 * - a key never runs in two workers at once: added while it runs, it runs again once it is done;
 * - a handler that throws is retried after an exponential backoff with jitter, capped, per key;
 *   a success resets the key's backoff, and its `requeueAfterMs` schedules the next run;
 * - at most `workers` handlers run at a time; `pause()` stops taking keys (a non-leader keeps
 *   collecting them), `stop()` drops what waits and resolves once the running handlers are done.
 *
 * While a key waits out an error backoff, adding it does not run it sooner: the retry sees the
 * latest state anyway (reconciles are level-triggered), and a failing reconcile that writes to
 * the objects it watches would otherwise retry itself in a hot loop.
 */

export interface QueueResult {
  requeueAfterMs?: number;
}

export interface QueueBackoff {
  /** The first retry's delay (default 500 ms). */
  baseMs: number;
  /** The longest delay (default 60 s). */
  maxMs: number;
}

export interface RunOutcome {
  key: string;
  ok: boolean;
  durationMs: number;
  error?: unknown;
  /** With an error: the delay before the retry, and how many times in a row this key has failed. */
  retryInMs?: number;
  failures?: number;
}

export interface WorkQueueOptions {
  /** Runs one key. Resolves with what to do next, or throws to be retried with backoff. */
  handler: (key: string) => Promise<QueueResult | void>;
  /** Handlers running at once (at least 1). */
  workers: number;
  backoff?: Partial<QueueBackoff>;
  /** After each run (for metrics and logs); must not throw. */
  onOutcome?: (o: RunOutcome) => void;
  /** Whenever the number of keys waiting to run changes. */
  onDepth?: (depth: number) => void;
  /** Random in [0, 1) for the jitter (tests pass their own). */
  random?: () => number;
}

export const DEFAULT_BACKOFF: QueueBackoff = { baseMs: 500, maxMs: 60_000 };

/** The delay before retry number `failures` (1-based): base·2^(failures-1), capped, then "equal jitter" (between half and all of it). */
export function backoffDelay(failures: number, b: QueueBackoff, random: () => number = Math.random): number {
  const exp = Math.min(b.maxMs, b.baseMs * 2 ** Math.min(failures - 1, 52));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

export class WorkQueue {
  /** Keys ready to run, in the order they came (a Set keeps insertion order). */
  private readonly ready = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  /** Keys added while they ran: they go back to `ready` when their run ends. */
  private readonly dirty = new Set<string>();
  /** Keys scheduled for later: when, and the timer. `backoff` marks an error retry (adds do not hurry it). */
  private readonly later = new Map<string, { at: number; timer: NodeJS.Timeout; backoff: boolean }>();
  private readonly failures = new Map<string, number>();
  private readonly backoff: QueueBackoff;
  private readonly random: () => number;
  private paused = false;
  private stopped = false;
  private lastDepth = -1;

  constructor(private readonly opts: WorkQueueOptions) {
    if (!Number.isInteger(opts.workers) || opts.workers < 1) throw new RangeError(`workers must be a positive integer, got ${opts.workers}`);
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.random = opts.random ?? Math.random;
  }

  /** Keys waiting to run now (not the running ones, nor those scheduled for later). */
  get depth(): number {
    return this.ready.size;
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** The key is queued, scheduled or running. */
  has(key: string): boolean {
    return this.ready.has(key) || this.running.has(key) || this.later.has(key);
  }

  /** Failures in a row of this key (0 after a success). */
  failureCount(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  add(key: string): void {
    if (this.stopped) return;
    const l = this.later.get(key);
    if (l?.backoff) return; // see the file comment
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (l) {
      clearTimeout(l.timer);
      this.later.delete(key);
    }
    this.ready.add(key);
    this.changed();
  }

  /** Runs the key after `ms` (sooner if it is added meanwhile; an earlier schedule wins over a later one). */
  addAfter(key: string, ms: number): void {
    this.schedule(key, ms, false);
  }

  /** Stops taking keys; they keep collecting (deduplicated) until resume(). Running handlers finish. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (this.stopped) return;
    this.paused = false;
    this.pump();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Drops every waiting and scheduled key, takes no more, and resolves once the running handlers are done. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const l of this.later.values()) clearTimeout(l.timer);
    this.later.clear();
    this.ready.clear();
    this.dirty.clear();
    this.changed();
    await Promise.allSettled([...this.running.values()]);
  }

  private schedule(key: string, ms: number, backoff: boolean): void {
    if (this.stopped) return;
    const at = Date.now() + Math.max(0, ms);
    const existing = this.later.get(key);
    if (existing && existing.at <= at && (existing.backoff || !backoff)) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.later.delete(key);
      this.add(key);
    }, Math.max(0, ms));
    timer.unref?.();
    this.later.set(key, { at, timer, backoff });
  }

  private changed(): void {
    if (this.ready.size !== this.lastDepth) {
      this.lastDepth = this.ready.size;
      this.opts.onDepth?.(this.ready.size);
    }
    this.pump();
  }

  private pump(): void {
    if (this.paused || this.stopped) return;
    while (this.running.size < this.opts.workers && this.ready.size > 0) {
      const key = this.ready.values().next().value as string;
      this.ready.delete(key);
      this.running.set(key, this.run(key));
    }
    if (this.ready.size !== this.lastDepth) {
      this.lastDepth = this.ready.size;
      this.opts.onDepth?.(this.ready.size);
    }
  }

  private async run(key: string): Promise<void> {
    // Let run() return its promise before the handler starts, so `running` holds it first.
    await Promise.resolve();
    const t0 = performance.now();
    let outcome: RunOutcome;
    let requeueAfterMs: number | undefined;
    try {
      const r = await this.opts.handler(key);
      requeueAfterMs = r?.requeueAfterMs;
      this.failures.delete(key);
      outcome = { key, ok: true, durationMs: performance.now() - t0 };
    } catch (error) {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      const retryInMs = backoffDelay(failures, this.backoff, this.random);
      outcome = { key, ok: false, durationMs: performance.now() - t0, error, retryInMs, failures };
    }
    this.running.delete(key);
    try {
      this.opts.onOutcome?.(outcome);
    } catch {
      /* an observer's bug must not wedge the queue */
    }
    const wasDirty = this.dirty.delete(key);
    if (!outcome.ok) {
      // The error retry replaces whatever was scheduled: it is the next run either way.
      const l = this.later.get(key);
      if (l) {
        clearTimeout(l.timer);
        this.later.delete(key);
      }
      this.schedule(key, outcome.retryInMs!, true);
    } else {
      if (requeueAfterMs !== undefined && requeueAfterMs >= 0) this.addAfter(key, requeueAfterMs);
      if (wasDirty) this.add(key);
    }
    this.pump();
  }
}
