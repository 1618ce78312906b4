import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Engine, EngineObserver } from './storage/engine.js';

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
    collectDefaultMetrics({ register: this.registry, prefix: 'loam_process_' });
  }

  observer(warn: (msg: string, fields?: Record<string, unknown>) => void): EngineObserver {
    return {
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
