/** The operator's Prometheus metrics (prom-client), in a registry of its own (not prom-client's global one). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({ name: 'loam_operator_reconciles_total', help: 'Reconciles of a DataStore, by result', labelNames: ['result'] as const, registers: [this.registry] });
  readonly reconcileErrors = new Counter({ name: 'loam_operator_reconcile_errors_total', help: 'Reconciles that threw (each is retried with backoff)', registers: [this.registry] });
  readonly reconcileDuration = new Histogram({
    name: 'loam_operator_reconcile_duration_seconds',
    help: 'How long one reconcile of a DataStore took',
    // A reconcile is a handful of API calls (ms) up to a drain step or a node admin call (seconds).
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({ name: 'loam_operator_queue_depth', help: 'DataStore keys waiting in the work queue', registers: [this.registry] });
  readonly leader = new Gauge({ name: 'loam_operator_leader', help: '1 while this replica holds the leader lease (or runs without leader election), else 0', registers: [this.registry] });

  constructor() {
    // Both series exist from the start, so rate() and alerts see a 0 rather than no data.
    this.reconciles.inc({ result: 'success' }, 0);
    this.reconciles.inc({ result: 'error' }, 0);
    this.leader.set(0);
    this.queueDepth.set(0);
    collectDefaultMetrics({ register: this.registry, prefix: 'loam_operator_' });
  }

  observeReconcile(ok: boolean, durationMs: number): void {
    this.reconciles.inc({ result: ok ? 'success' : 'error' });
    if (!ok) this.reconcileErrors.inc();
    this.reconcileDuration.observe(durationMs / 1000);
  }
}
