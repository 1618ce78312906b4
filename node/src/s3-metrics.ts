import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Engine } from './storage/engine.js';
import type { TierObserver } from './storage/tier/s3-tier.js';
import type { ObjectOp, ObjectStoreError } from './storage/object-store.js';
import type { Logger } from './logger.js';

/** The S3 tier's metrics (registered on the node's registry; series appear once S3 is used). */
export class S3Metrics {
  readonly generation: Gauge;
  readonly fenced: Gauge;
  private readonly uploads: Counter;
  private readonly uploadFailures: Counter;
  private readonly uploadBytes: Counter;
  private readonly requestSeconds: Histogram;
  private readonly requestErrors: Counter;
  private readonly bytes: Counter;
  private readonly mismatches: Counter;
  private readonly evictions: Counter;
  private readonly remoteReads: Counter;
  private readonly replayTotal: Gauge;
  private readonly replayDone: Gauge;
  private readonly replayBytes: Gauge;
  private readonly checkpoints: Counter;
  private readonly checkpointBytes: Gauge;
  private readonly checkpointFallbacks: Counter;
  private readonly checkpointSegments: Gauge;

  constructor(registry: Registry, engine: () => Engine | undefined) {
    const registers = [registry];
    const backlog = (name: string, help: string, pick: (b: { bytes: number; oldestMs: number }) => number) => new Gauge({
      name, help, registers,
      collect() {
        const t = engine()?.tier;
        if (t) this.set(pick(t.backlog()));
      },
    });
    backlog('loam_s3_upload_backlog_bytes', 'Bytes acknowledged locally that no manifest in S3 names yet', (b) => b.bytes);
    backlog('loam_s3_upload_backlog_age_seconds', 'Age of the oldest of those bytes', (b) => b.oldestMs / 1000);
    this.generation = new Gauge({ name: 'loam_s3_generation', help: 'The generation this start of the node holds (keys in S3 carry it)', registers });
    this.fenced = new Gauge({ name: 'loam_s3_fenced', help: '1 once a later start of this node identity took over', registers });
    this.uploads = new Counter({ name: 'loam_s3_uploads_total', help: 'Segments uploaded', registers });
    this.uploadBytes = new Counter({ name: 'loam_s3_upload_bytes_total', help: 'Bytes of segments uploaded', registers });
    this.uploadFailures = new Counter({ name: 'loam_s3_upload_failures_total', help: 'Failed segment upload attempts (each is retried)', labelNames: ['reason'], registers });
    this.requestSeconds = new Histogram({
      name: 'loam_s3_request_duration_seconds', help: 'S3 request latency by operation', labelNames: ['op'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers,
    });
    this.requestErrors = new Counter({ name: 'loam_s3_request_errors_total', help: 'Failed S3 requests by operation and code', labelNames: ['op', 'code'], registers });
    this.bytes = new Counter({ name: 'loam_s3_bytes_total', help: 'Bytes to and from S3', labelNames: ['direction'], registers });
    new Gauge({
      name: 'loam_s3_cache_bytes', help: 'Local bytes of segments S3 holds (bounded by --disk-cache-size)', registers,
      collect() {
        const t = engine()?.tier;
        if (t) this.set(t.cachedBytes());
      },
    });
    new Gauge({
      name: 'loam_s3_horizon_held_segments', help: 'Compacted segments the manifest still names at an earlier revision: what superseded the records they dropped is not all in S3 yet', registers,
      collect() {
        const t = engine()?.tier;
        if (t) this.set(t.heldForHorizon());
      },
    });
    this.evictions = new Counter({ name: 'loam_s3_cache_evictions_total', help: 'Segments evicted from local disk (S3 holds them)', registers });
    this.remoteReads = new Counter({ name: 'loam_s3_remote_reads_total', help: 'Block reads of evicted segments, from the block cache (hit) or S3 (miss)', labelNames: ['result'], registers });
    this.replayTotal = new Gauge({ name: 'loam_s3_replay_segments', help: 'Segments the start replays from S3 (a restore, or evicted segments)', registers });
    this.replayDone = new Gauge({ name: 'loam_s3_replay_segments_done', help: 'Of those, replayed so far', registers });
    this.replayBytes = new Gauge({ name: 'loam_s3_replay_bytes_done', help: 'Bytes replayed from S3 so far', registers });
    this.checkpoints = new Counter({ name: 'loam_s3_checkpoints_total', help: 'Index checkpoints written to S3', registers });
    this.checkpointBytes = new Gauge({ name: 'loam_s3_checkpoint_bytes', help: 'Size of the last index checkpoint written', registers });
    this.checkpointFallbacks = new Counter({ name: 'loam_s3_checkpoint_fallbacks_total', help: 'Restores that could not use the manifest\'s index checkpoint (unreadable, checksum, stale) and replayed every segment', labelNames: ['reason'], registers });
    this.checkpointSegments = new Gauge({ name: 'loam_s3_restore_checkpoint_segments', help: 'Segments the restore took from the index checkpoint instead of replaying them', registers });
    this.mismatches = new Counter({ name: 'loam_s3_checksum_mismatches_total', help: 'Downloads that did not match their checksum (never served)', registers });
  }

  /** For S3ObjectStore's `observe` option. */
  readonly request = (e: { op: ObjectOp; ms: number; bytes: number; error?: ObjectStoreError }) => {
    this.requestSeconds.observe({ op: e.op }, e.ms / 1000);
    if (e.error) this.requestErrors.inc({ op: e.op, code: e.error.code });
    if (e.bytes > 0) this.bytes.inc({ direction: e.op === 'create' ? 'out' : 'in' }, e.bytes);
  };

  mismatch(key: string, log: Logger): void {
    this.mismatches.inc();
    log.error({ key }, 'a download from S3 did not match its checksum: retried, never served');
  }

  observer(log: Logger): TierObserver {
    return {
      info: (msg, fields) => log.info(fields ?? {}, msg),
      warn: (msg, fields) => log.warn(fields ?? {}, msg),
      uploaded: (bytes) => {
        this.uploads.inc();
        this.uploadBytes.inc(bytes);
      },
      uploadFailed: (reason) => this.uploadFailures.inc({ reason }),
      fenced: () => this.fenced.set(1),
      evicted: () => this.evictions.inc(),
      remoteRead: (hit) => this.remoteReads.inc({ result: hit ? 'hit' : 'miss' }),
      checkpointWritten: (bytes) => {
        this.checkpoints.inc();
        this.checkpointBytes.set(bytes);
      },
      checkpointFallback: (reason) => this.checkpointFallbacks.inc({ reason }),
      checkpointLoaded: (segments) => this.checkpointSegments.set(segments),
      replayProgress: (done, of, bytes) => {
        this.replayTotal.set(of);
        this.replayDone.set(done);
        this.replayBytes.set(bytes);
      },
    };
  }
}
