import http from 'node:http';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import { S3Metrics } from './s3-metrics.js';
import type { Engine, EngineObserver } from './storage/engine.js';

/** The event-loop monitor's timer interval: a sample is how much later than this the timer ran. */
const LOOP_SAMPLE_MS = 10;

/**
 * `loam_event_loop_lag_seconds`: a Prometheus histogram of how late the event loop ran a
 * LOOP_SAMPLE_MS timer, one sample per run, read at each scrape from a
 * perf_hooks.monitorEventLoopDelay. The monitor is never reset: a reset makes it skip its next
 * sample, which may be the very stall a scrape delayed by it would report (prom-client's
 * default loam_process_nodejs_eventloop_lag_* gauges reset at every scrape, so they lose it, and
 * two scrapers each see only part). The monitor keeps an HDR histogram, not samples, so each
 * bucket's count is found by binary search over ranks: the value at percentile 100*r/count is
 * the r-th smallest sample (to HDR's 0.1 %). prom-client can only observe one value at a time,
 * so this is registered as a custom metric (the name, type, get() and reset() a Registry uses).
 */
class EventLoopLag {
  readonly name = 'loam_event_loop_lag_seconds';
  readonly help = `Event-loop lag: how late a ${LOOP_SAMPLE_MS} ms timer ran (its interval excluded), one observation per run`;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private monitor!: IntervalHistogram;
  /**
   * Per bucket: samples at or under its bound at the last read, and how many samples there were:
   * a bucket's count now is between its last one and that plus the new samples, which bounds the search.
   */
  private below: number[] = [];
  private seen = 0;
  private sum = 0;

  constructor(readonly buckets: number[]) {
    this.reset();
  }

  reset(): void {
    this.monitor?.disable();
    this.monitor = monitorEventLoopDelay({ resolution: LOOP_SAMPLE_MS });
    this.monitor.enable();
    this.below = this.buckets.map(() => 0);
    this.seen = 0;
    this.sum = 0;
  }

  async get() {
    const m = this.monitor;
    const n = m.count;
    const counts = this.buckets.map((bound, i) => {
      // The largest rank r whose sample is within `bound`, as the monitor records it (interval included).
      const limitNs = (bound * 1e3 + LOOP_SAMPLE_MS) * 1e6;
      let lo = this.below[i];
      let hi = Math.min(n, lo + n - this.seen);
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (m.percentile((100 * mid) / n) <= limitNs) lo = mid;
        else hi = mid - 1;
      }
      this.below[i] = lo;
      return lo;
    });
    this.seen = n;
    // From the monitor's mean. A sample a little under the interval (a timer run early) is in the
    // lowest bucket but would subtract here, and a histogram's sum must never go down (rate()
    // would read a counter reset): it only moves up.
    if (n > 0) this.sum = Math.max(this.sum, ((m.mean / 1e6 - LOOP_SAMPLE_MS) / 1e3) * n);
    const bucket = `${this.name}_bucket`;
    return {
      name: this.name, help: this.help, type: this.type, aggregator: this.aggregator,
      values: [
        ...this.buckets.map((le, i) => ({ metricName: bucket, labels: { le }, value: counts[i] })),
        { metricName: bucket, labels: { le: '+Inf' }, value: n },
        { metricName: `${this.name}_sum`, labels: {}, value: this.sum },
        { metricName: `${this.name}_count`, labels: {}, value: n },
      ],
    };
  }

  close(): void {
    this.monitor.disable();
  }
}

/** Every metric the node exports, in one registry per node (tests run several in one process). */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'loam_requests_total', help: 'gRPC requests by method and outcome', labelNames: ['method', 'outcome'], registers: [this.registry] });
  readonly requestSeconds = new Histogram({
    name: 'loam_request_duration_seconds', help: 'gRPC request latency by method and outcome', labelNames: ['method', 'outcome'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [this.registry],
  });
  readonly commits = new Counter({ name: 'loam_commits_total', help: 'Commits by outcome', labelNames: ['outcome'], registers: [this.registry] });
  readonly conflicts = new Counter({ name: 'loam_conflicts_total', help: 'Rejected commits by conflict kind', labelNames: ['kind'], registers: [this.registry] });
  readonly fsyncSeconds = new Histogram({
    name: 'loam_fsync_duration_seconds', help: 'Log fdatasync latency', buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1], registers: [this.registry],
  });
  readonly fsyncBatches = new Histogram({ name: 'loam_group_commit_batches', help: 'Commits sharing one fsync', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers: [this.registry] });
  readonly cacheHits = new Counter({ name: 'loam_cache_hits_total', help: 'Object cache hits', registers: [this.registry] });
  readonly cacheMisses = new Counter({ name: 'loam_cache_misses_total', help: 'Object cache misses (read from the log)', registers: [this.registry] });
  readonly peerCallsRefused = new Counter({
    name: 'loam_peer_calls_refused_total', help: 'Calls to the peer port refused for a missing or wrong cluster secret', labelNames: ['reason'], registers: [this.registry],
  });
  readonly s3: S3Metrics;
  private readonly eventLoopLag = new EventLoopLag([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);

  constructor(engine: () => Engine | undefined) {
    const stat = (name: string, help: string, pick: (s: ReturnType<Engine['stats']>) => number) =>
      new Gauge({
        name, help, registers: [this.registry],
        collect() {
          const e = engine();
          if (e) this.set(pick(e.stats()));
        },
      });
    stat('loam_objects', 'Objects stored on this node', (s) => s.objects);
    stat('loam_disk_bytes', 'Bytes of log segments on disk', (s) => s.diskBytes);
    stat('loam_live_bytes', 'Bytes of log records still live', (s) => s.liveBytes);
    stat('loam_index_bytes', 'Memory of the oid index', (s) => s.indexBytes);
    stat('loam_cache_bytes', 'Memory of the object cache', (s) => s.cacheBytes);
    stat('loam_segments', 'Log segments on disk', (s) => s.segments);
    this.s3 = new S3Metrics(this.registry, engine);
    collectDefaultMetrics({ register: this.registry, prefix: 'loam_process_' });
    this.registry.registerMetric(this.eventLoopLag as unknown as Metric);
  }

  /** Stops the event-loop monitor (its timer would keep sampling for a node that is gone). */
  close(): void {
    this.eventLoopLag.close();
  }

  /** 1 while the log refuses writes, labelled with why (ENOSPC, EIO); no series while it takes them. */
  readonly writesRefused = new Gauge({ name: 'loam_writes_refused', help: 'Whether the log refuses writes now, and why', labelNames: ['reason'], registers: [this.registry] });

  observer(warn: (msg: string, fields?: Record<string, unknown>) => void): EngineObserver {
    return {
      writable: (block) => {
        this.writesRefused.reset();
        if (block) this.writesRefused.set({ reason: block.reason }, 1);
      },
      fsync: (seconds, _bytes, batches) => {
        this.fsyncSeconds.observe(seconds);
        this.fsyncBatches.observe(batches);
      },
      commit: (outcome) => {
        this.commits.inc({ outcome });
        if (outcome === 'write_conflict') this.conflicts.inc({ kind: 'write' });
        if (outcome === 'read_conflict') this.conflicts.inc({ kind: 'read' });
      },
      cache: (hit) => (hit ? this.cacheHits.inc() : this.cacheMisses.inc()),
      warn,
    };
  }

  /** Serves /metrics on host:port; resolves with the bound port. */
  async serve(host: string, port: number): Promise<{ port: number; close: () => Promise<void> }> {
    const server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found; try /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(body),
        (e: Error) => res.writeHead(500).end(e.message),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const addr = server.address();
    return {
      port: typeof addr === 'object' && addr ? addr.port : port,
      close: () => new Promise<void>((r) => server.close(() => r())),
    };
  }
}
