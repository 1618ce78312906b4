/** The operator's work queue (operator/src/runtime/queue.ts): de-duplication, one run per key at a time, bounded workers, backoff, requeue, stop. */
import { describe, expect, it } from 'vitest';
import { backoffDelay, WorkQueue, type RunOutcome } from '../src/runtime/queue.js';
import { pollUntil } from '../../test/harness/wait.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('backoffDelay', () => {
  const b = { baseMs: 100, maxMs: 1000 };
  it('doubles per failure, is capped, and jitters between half and all of the step', () => {
    expect(backoffDelay(1, b, () => 0)).toBe(50);
    expect(backoffDelay(1, b, () => 0.999999)).toBe(100);
    expect(backoffDelay(2, b, () => 0.999999)).toBe(200);
    expect(backoffDelay(4, b, () => 0.999999)).toBe(800);
    expect(backoffDelay(5, b, () => 0.999999)).toBe(1000);
    expect(backoffDelay(500, b, () => 0.999999)).toBe(1000);
    expect(backoffDelay(500, b, () => 0)).toBe(500);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(3, b);
      expect(d).toBeGreaterThanOrEqual(200);
      expect(d).toBeLessThanOrEqual(400);
    }
  });
});

describe('WorkQueue', () => {
  it('runs a key queued twice once', async () => {
    const calls: string[] = [];
    const q = new WorkQueue({ workers: 2, handler: async (k) => void calls.push(k) });
    q.pause();
    q.add('a');
    q.add('a');
    q.add('b');
    expect(q.depth).toBe(2);
    q.resume();
    await pollUntil(() => calls.length === 2 && q.runningCount === 0, 'both keys to run', 5000);
    expect(calls.sort()).toEqual(['a', 'b']);
    await q.stop();
  });

  it('never runs a key in two workers at once; a key added while it runs runs once more after', async () => {
    let concurrent = 0;
    let maxConcurrent = 0;
    let runs = 0;
    const gates = [deferred(), deferred()];
    const q = new WorkQueue({
      workers: 4,
      handler: async () => {
        concurrent++;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        await gates[runs++]?.promise;
        concurrent--;
      },
    });
    q.add('k');
    await pollUntil(() => runs === 1, 'the first run to start', 5000);
    q.add('k');
    q.add('k'); // still one more run, not two
    expect(q.depth).toBe(0); // held back, not ready: the key is running
    gates[0].resolve();
    await pollUntil(() => runs === 2, 'the second run', 5000);
    gates[1].resolve();
    await pollUntil(() => q.runningCount === 0 && !q.has('k'), 'the queue to go idle', 5000);
    expect(runs).toBe(2);
    expect(maxConcurrent).toBe(1);
    await q.stop();
  });

  it('runs at most `workers` handlers at once', async () => {
    let concurrent = 0;
    let maxConcurrent = 0;
    const gate = deferred();
    const done: string[] = [];
    const q = new WorkQueue({
      workers: 2,
      handler: async (k) => {
        concurrent++;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        await gate.promise;
        concurrent--;
        done.push(k);
      },
    });
    const depths: number[] = [];
    for (const k of ['a', 'b', 'c', 'd', 'e']) q.add(k);
    await pollUntil(() => q.runningCount === 2, 'two running', 5000);
    depths.push(q.depth);
    expect(depths).toEqual([3]);
    gate.resolve();
    await pollUntil(() => done.length === 5, 'all five', 5000);
    expect(maxConcurrent).toBe(2);
    await q.stop();
  });

  it('retries a failing key with growing delays, counts its failures, and resets them on success', async () => {
    const times: number[] = [];
    const outcomes: RunOutcome[] = [];
    const q = new WorkQueue({
      workers: 1,
      backoff: { baseMs: 40, maxMs: 1000 },
      random: () => 0.999999, // no jitter: exact steps 40, 80, 160
      onOutcome: (o) => outcomes.push(o),
      handler: async () => {
        times.push(performance.now());
        if (times.length <= 3) throw new Error(`failure ${times.length}`);
      },
    });
    q.add('k');
    await pollUntil(() => times.length === 4 && q.runningCount === 0, 'three failures and a success', 10_000);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(gaps[0]).toBeGreaterThanOrEqual(38);
    expect(gaps[1]).toBeGreaterThanOrEqual(78);
    expect(gaps[2]).toBeGreaterThanOrEqual(158);
    expect(outcomes.map((o) => o.ok)).toEqual([false, false, false, true]);
    expect(outcomes.slice(0, 3).map((o) => [o.failures, o.retryInMs])).toEqual([[1, 40], [2, 80], [3, 160]]);
    expect(String(outcomes[0].error)).toContain('failure 1');
    expect(q.failureCount('k')).toBe(0);
    expect(q.has('k')).toBe(false); // a success without requeueAfterMs leaves nothing scheduled
    await q.stop();
  });

  it('does not hurry a key waiting out its error backoff when it is added again', async () => {
    let runs = 0;
    const q = new WorkQueue({
      workers: 1,
      backoff: { baseMs: 300, maxMs: 300 },
      random: () => 0.999999,
      handler: async () => {
        runs++;
        if (runs === 1) throw new Error('boom');
      },
    });
    const t0 = performance.now();
    q.add('k');
    await pollUntil(() => q.failureCount('k') === 1 && q.runningCount === 0, 'the first failure', 5000);
    q.add('k');
    q.add('k');
    expect(runs).toBe(1);
    expect(q.depth).toBe(0);
    await pollUntil(() => runs === 2, 'the retry', 5000);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(295);
    await q.stop();
  });

  it('honours requeueAfterMs', async () => {
    const times: number[] = [];
    const q = new WorkQueue({
      workers: 1,
      handler: async () => {
        times.push(performance.now());
        return times.length === 1 ? { requeueAfterMs: 120 } : {};
      },
    });
    q.add('k');
    await pollUntil(() => times.length === 2, 'the requeued run', 5000);
    expect(times[1] - times[0]).toBeGreaterThanOrEqual(118);
    await pollUntil(() => !q.has('k'), 'nothing more scheduled', 5000);
    expect(times.length).toBe(2);
    await q.stop();
  });

  it('a paused queue collects keys and runs them on resume', async () => {
    const calls: string[] = [];
    const q = new WorkQueue({ workers: 1, handler: async (k) => void calls.push(k) });
    q.pause();
    q.add('x');
    q.add('y');
    q.add('x');
    await new Promise((r) => setImmediate(r));
    expect(calls).toEqual([]);
    expect(q.depth).toBe(2);
    q.resume();
    await pollUntil(() => calls.length === 2, 'the collected keys', 5000);
    expect(calls).toEqual(['x', 'y']);
    await q.stop();
  });

  it('stop() waits for running handlers, drops waiting and scheduled keys, and takes no more', async () => {
    const gate = deferred();
    const calls: string[] = [];
    let finished = false;
    const q = new WorkQueue({
      workers: 1,
      handler: async (k) => {
        calls.push(k);
        if (k === 'a') {
          await gate.promise;
          finished = true;
        }
      },
    });
    q.add('a');
    q.add('b');
    q.addAfter('c', 10);
    await pollUntil(() => calls.length === 1, 'a to start', 5000);
    const stopping = q.stop();
    let stopped = false;
    void stopping.then(() => (stopped = true));
    await new Promise((r) => setImmediate(r));
    expect(stopped).toBe(false); // still waiting for `a`
    gate.resolve();
    await stopping;
    expect(finished).toBe(true);
    q.add('d');
    expect(q.has('b')).toBe(false);
    expect(q.has('c')).toBe(false); // its timer is cleared
    expect(q.has('d')).toBe(false);
    expect(calls).toEqual(['a']);
    expect(q.depth).toBe(0);
  });

  it('reports its depth', async () => {
    const depths: number[] = [];
    const q = new WorkQueue({ workers: 1, handler: async () => undefined, onDepth: (d) => depths.push(d) });
    q.pause();
    q.add('a');
    q.add('b');
    q.resume();
    await pollUntil(() => q.depth === 0 && q.runningCount === 0, 'idle', 5000);
    expect(depths).toEqual([1, 2, 1, 0]);
    await q.stop();
  });

  it('rejects a worker count that is not a positive integer', () => {
    expect(() => new WorkQueue({ workers: 0, handler: async () => undefined })).toThrow(/workers/);
  });
});
