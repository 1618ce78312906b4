import { describe, expect, it } from 'vitest';
import { startNode, waitFor } from './harness/node-process.js';

/** The loam_event_loop_lag_seconds series of one /metrics body. */
function parse(body: string): { type?: string; buckets: [string, number][]; sum: number; count: number } {
  const buckets: [string, number][] = [];
  let sum = NaN;
  let count = NaN;
  for (const line of body.split('\n')) {
    const b = /^loam_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$/.exec(line);
    if (b) buckets.push([b[1], Number(b[2])]);
    if (line.startsWith('loam_event_loop_lag_seconds_sum ')) sum = Number(line.split(' ')[1]);
    if (line.startsWith('loam_event_loop_lag_seconds_count ')) count = Number(line.split(' ')[1]);
  }
  return { type: /^# TYPE loam_event_loop_lag_seconds (\S+)$/m.exec(body)?.[1], buckets, sum, count };
}

describe('loam_event_loop_lag_seconds on /metrics', () => {
  it('every node of `loam dev --nodes 2` exports it as a histogram with a sane value', async () => {
    const dev = await startNode({ args: ['--nodes', '2'] });
    const ports = dev.logs.find((l) => l.msg === 'ready')!.metricsPorts as number[];
    expect(ports).toHaveLength(2);
    for (const port of ports) {
      const lag = (await waitFor(async () => {
        const l = parse(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
        return l.count >= 10 ? l : undefined;
      }, `event-loop samples on metrics port ${port}`, 10_000, 100))!;
      expect(lag.type).toBe('histogram');
      expect(lag.buckets.at(-1)).toEqual(['+Inf', lag.count]);
      for (let i = 1; i < lag.buckets.length; i++) expect(lag.buckets[i][1]).toBeGreaterThanOrEqual(lag.buckets[i - 1][1]);
      // The 10 ms sampling interval is not counted as lag: some samples are within 1 ms (with it,
      // none could be). And the mean of an idle node is sane.
      expect(lag.buckets.find(([le]) => le === '0.001')![1]).toBeGreaterThanOrEqual(1);
      expect(lag.sum).toBeGreaterThanOrEqual(0);
      expect(lag.sum / lag.count).toBeLessThan(0.05);
    }
    await dev.stop();
  });
});
