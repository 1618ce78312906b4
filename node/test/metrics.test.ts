import { afterEach, describe, expect, it } from 'vitest';
import { NodeMetrics } from '../dist/metrics.js';

const made: NodeMetrics[] = [];
afterEach(() => {
  for (const m of made.splice(0)) m.close();
});

/** loam_event_loop_lag_seconds as { count, sum, buckets: le -> cumulative count }. */
async function lag(m: NodeMetrics): Promise<{ count: number; sum: number; buckets: Map<string, number> }> {
  const values = (await m.registry.getSingleMetric('loam_event_loop_lag_seconds')!.get()).values as { metricName?: string; labels: Record<string, string | number>; value: number }[];
  const buckets = new Map<string, number>();
  let count = 0;
  let sum = 0;
  for (const v of values) {
    if (v.metricName === 'loam_event_loop_lag_seconds_bucket') buckets.set(String(v.labels.le), v.value);
    if (v.metricName === 'loam_event_loop_lag_seconds_count') count = v.value;
    if (v.metricName === 'loam_event_loop_lag_seconds_sum') sum = v.value;
  }
  return { count, sum, buckets };
}

async function until<T>(fn: () => Promise<T | undefined>, what: string, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('loam_event_loop_lag_seconds', () => {
  it('is a histogram whose samples are near zero on an idle loop and show a stall', async () => {
    const m = new NodeMetrics(() => undefined);
    made.push(m);
    expect(await m.registry.metrics()).toContain('# TYPE loam_event_loop_lag_seconds histogram');
    const idle = await until(async () => {
      const l = await lag(m);
      return l.count >= 20 ? l : undefined;
    }, 'idle samples');
    // The 10 ms sampling interval itself is not lag: an idle loop has samples within 1 ms.
    expect(idle.buckets.get('0.001')!).toBeGreaterThanOrEqual(1);
    expect(idle.sum / idle.count).toBeLessThan(0.05);

    const t0 = Date.now();
    while (Date.now() - t0 < 300); // the stall being measured: 300 ms without the loop turning
    // The first read comes right after the stall, before the monitor's timer has run: it must
    // not make the monitor lose that sample (a reset would).
    const after = await until(async () => {
      const l = await lag(m);
      return l.count - l.buckets.get('0.25')! >= 1 ? l : undefined;
    }, 'a sample over 250 ms');
    expect(after.count - after.buckets.get('1')!).toBe(0); // ...and under a second
    expect(after.sum).toBeGreaterThanOrEqual(idle.sum + 0.25);
    let prev = 0;
    for (const v of after.buckets.values()) { // cumulative buckets never decrease; +Inf is the count
      expect(v).toBeGreaterThanOrEqual(prev);
      prev = v;
    }
    expect(after.buckets.get('+Inf')).toBe(after.count);
  });
});
