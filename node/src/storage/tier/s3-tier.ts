import pRetry, { AbortError } from 'p-retry';
import { ObjectExistsError, ObjectStorePermanentError, type ObjectStore } from '../object-store.js';
import { checkpointFits, encodeManifest, type Manifest, type ManifestCheckpoint, type ManifestKeys, type ManifestSegment } from './manifest.js';
import type { EncodedCheckpoint } from './checkpoint.js';
import { RemoteReader } from './remote-reader.js';
import { crc32Yielding } from './checked-fetch.js';

/** What the tier needs of the local log (SegmentLog). */
export interface TierLog {
  readonly activeSegment: number;
  segments(): number[];
  segmentSize(segment: number): number;
  fileName(segment: number): string;
  /** A rewrite's liveness horizon (segment id; 0 for appended content): see SegmentLog.horizonOf. */
  horizonOf(segment: number): number;
  /** Ids removed whole, with their horizon, until `forgetRemoved`. */
  removedSegments(): ReadonlyMap<number, number>;
  forgetRemoved(id: number): void;
  readSegment(segment: number): Promise<Buffer>;
  seal(): Promise<number | undefined>;
  localSealed(): { segment: number; name: string; size: number; lastRead: number }[];
  evict(segment: number): Promise<void>;
}

/** The generation this process holds (see cluster/generation.ts), or a fixed one without a metadata store. */
export interface TierGeneration {
  readonly value: number;
  /** False once a later start of this identity took over. */
  current(): Promise<boolean>;
}

export interface TierObserver {
  info?(msg: string, fields?: Record<string, unknown>): void;
  warn?(msg: string, fields?: Record<string, unknown>): void;
  uploaded?(bytes: number, seconds: number): void;
  uploadFailed?(reason: string): void;
  fenced?(): void;
  evicted?(bytes: number): void;
  /** A ranged read of an evicted segment: served from the block cache (hit) or S3. */
  remoteRead?(hit: boolean): void;
  /** Segments replayed from S3 at open (a restore, or a restart with evicted segments). */
  replayProgress?(done: number, of: number, bytes: number): void;
  /** An index checkpoint landed in S3 (`objects` in its index). */
  checkpointWritten?(bytes: number, objects: number): void;
  /** A restore could not use the manifest's checkpoint and replays every segment instead. */
  checkpointFallback?(reason: string): void;
  /** A restore loaded the checkpoint: `segments` were not replayed. */
  checkpointLoaded?(segments: number): void;
}

/** How the tier gets index checkpoints from the engine (see tier/checkpoint.ts). */
export interface CheckpointTaker {
  /**
   * The engine's state at a seal boundary, serialized; 'nothing' when no sealed segment holds
   * data; undefined when it cannot be taken right now (compaction running, writes refused).
   */
  capture(): Promise<EncodedCheckpoint | 'nothing' | undefined>;
  /** A checkpoint is taken once this many bytes were uploaded since the last one. */
  everyBytes: number;
}

export interface S3TierOptions {
  store: ObjectStore;
  keys: ManifestKeys;
  nodeNumber: number;
  /** The longest a durable write exists only on local disk before its segment is sealed and uploaded. */
  uploadIntervalMs: number;
  /** The manifest this node's log was restored from or last uploaded (seeds what is already in S3). */
  manifest?: Manifest;
  concurrency?: number;
  observer?: TierObserver;
  /** Bound on local bytes of segments S3 holds; the least recently read go first. None: keep all. */
  diskCacheBytes?: number;
  onChecksumMismatch?: (key: string) => void;
  /** Index checkpoints (none: a restore replays every segment). */
  checkpoint?: CheckpointTaker;
}

/** Sealed segments uploaded at once. */
const DEFAULT_CONCURRENCY = 4;
/** Manifests kept besides the current one (a restore racing a GC still finds its segments). */
const KEEP_MANIFESTS = 2;

/**
 * Local disk in front of S3. Sealed segments are uploaded in the background (several at a
 * time, each retried with jittered backoff until it lands), then a new manifest names them; the
 * active segment is sealed once its first write is `uploadInterval / 2` old, so no durable write
 * waits longer than about the interval before it is in S3. Uploads never block or fail local
 * writes: the backlog only grows. Before every manifest write and every delete the tier checks
 * that its generation is still current; once fenced it stops for good.
 */
export class S3Tier {
  /** By segment file name: uploaded content of this name. */
  private readonly uploaded = new Map<string, ManifestSegment>();
  /** By segment id: the latest uploaded content of any revision (replays like the current one). */
  private readonly uploadedById = new Map<number, ManifestSegment>();
  private readonly uploading = new Map<string, Promise<void>>();
  /** By uploaded name: its liveness horizon (the log's, when its upload started). */
  private readonly horizons = new Map<string, number>();
  /** Names a manifest named: their horizon was reached then, and stays reached. */
  private readonly met = new Set<string>();
  /** Segments the last manifest computed named at an earlier revision, waiting for a horizon. */
  private held = 0;
  /** When each segment was first seen holding bytes not in S3 (for sealing and the backlog age). */
  private readonly firstSeen = new Map<number, number>();
  private seq = 0;
  private current?: Manifest;
  private previous: Manifest[] = [];
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private fencedFlag = false;
  private readonly abort = new AbortController();
  private readonly concurrency: number;
  private readonly obs: TierObserver;
  private sweptAtStart = false;
  private gcWanted = false;
  private index: { sizes: Map<string, number>; revs: Map<number, number> } = { sizes: new Map(), revs: new Map() };
  private indexOf?: Manifest;

  private gen?: TierGeneration;

  /** Bytes uploaded since the last checkpoint was captured (rewrites count: they make checkpoints stale). */
  private bytesSinceCheckpoint = 0;
  /** Captured, waiting for its segments to be in S3 before it is uploaded. */
  private pendingCheckpoint?: EncodedCheckpoint & { capture: number; captureMs: number; key?: string; crc32?: number; failures: number };
  /** The latest checkpoint in S3 that may still fit the log (the manifest names it while it does). */
  private checkpoint?: ManifestCheckpoint;
  private checkpointCapture = 0;
  /** This generation's checkpoint keys. */
  private checkpointSeq = 0;
  private captures = 0;
  /** The capture a manifest last named, and the last capture that found nothing to do (for `checkpointNow`). */
  private namedCapture = 0;
  private emptyCapture = 0;
  private checkpointWanted = false;

  /** Reads what is only in S3 (for the log's remote segments). */
  readonly remote: RemoteReader;
  private logRef?: TierLog;

  constructor(private readonly opts: S3TierOptions) {
    this.concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
    this.obs = opts.observer ?? {};
    this.remote = new RemoteReader(opts.store, { onMismatch: opts.onChecksumMismatch, onFetch: (hit) => this.obs.remoteRead?.(hit) });
    const m = opts.manifest;
    if (m) {
      for (const s of m.segments) {
        this.remember(s);
        this.met.add(s.name);
      }
      this.current = m;
      this.checkpoint = m.checkpoint;
    }
    this.remote.setManifest(m);
  }

  /** The key of the latest checkpoint that may still fit the log. */
  get checkpointKey(): string | undefined {
    return this.checkpoint?.key;
  }

  /** A restore could not use the manifest's checkpoint: later manifests do not name it (GC deletes it). */
  dropCheckpoint(): void {
    this.checkpoint = undefined;
  }

  /** The log this tier uploads (opened with `remote` as its remote segments). */
  attach(log: TierLog): void {
    this.logRef = log;
  }

  private get log(): TierLog {
    if (!this.logRef) throw new Error('invariant: the S3 tier has no log attached');
    return this.logRef;
  }

  /** The highest generation S3 shows for this node: a new start must take a higher one. */
  get generationSeen(): number {
    return this.opts.manifest?.generation ?? 0;
  }

  /** The generation uploads carry; undefined until `start`. */
  get generation(): number | undefined {
    return this.gen?.value;
  }

  private get generationValue(): number {
    if (!this.gen) throw new Error('invariant: the S3 tier is not started');
    return this.gen.value;
  }

  get fenced(): boolean {
    return this.fencedFlag;
  }

  /**
   * Starts uploading as `generation` (every `uploadInterval / 10`, at most 1 s). Until then
   * writes only accumulate locally (the node may be waiting for etcd to give it a generation).
   */
  start(generation: TierGeneration): void {
    if (generation.value <= this.generationSeen) throw new Error(`invariant: generation ${generation.value} is not above ${this.generationSeen}, which S3 already holds`);
    this.gen = generation;
    if (this.stopped) return;
    const every = Math.max(50, Math.min(1_000, Math.floor(this.opts.uploadIntervalMs / 10)));
    this.timer = setInterval(() => void this.kick(), every);
    this.timer.unref();
    void this.kick();
  }

  /** Stops the loop; uploads in flight are abandoned (a restart redoes them). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.abort.abort(new Error('the S3 tier is stopping'));
    await this.running?.catch(() => undefined);
    await Promise.allSettled([...this.uploading.values()]);
  }

  /** Bytes acknowledged locally and not yet named by a manifest in S3, and the age of the oldest. */
  backlog(now = Date.now()): { bytes: number; oldestMs: number; segments: number } {
    let bytes = 0;
    let segments = 0;
    let oldest = now;
    for (const h of this.log.segments()) {
      const size = this.log.segmentSize(h);
      if (size === 0 || this.inManifest(h)) continue;
      bytes += size;
      segments++;
      oldest = Math.min(oldest, this.firstSeen.get(h) ?? now);
    }
    return { bytes, oldestMs: segments === 0 ? 0 : now - oldest, segments };
  }

  /** Whether the current manifest holds segment `h` as it is now (or an earlier revision of it). */
  private inManifest(h: number): boolean {
    const name = this.log.fileName(h);
    const idx = this.manifestIndex();
    if (idx.sizes.get(name) === this.log.segmentSize(h)) return true;
    const rev = idx.revs.get(segmentId(name));
    return rev !== undefined && rev < segmentRev(name);
  }

  /** The current manifest by segment name (sizes) and id (revision), built once per manifest. */
  private manifestIndex(): { sizes: Map<string, number>; revs: Map<number, number> } {
    if (this.indexOf !== this.current) {
      const sizes = new Map<string, number>();
      const revs = new Map<number, number>();
      for (const s of this.current?.segments ?? []) {
        sizes.set(s.name, s.size);
        revs.set(segmentId(s.name), segmentRev(s.name));
      }
      this.index = { sizes, revs };
      this.indexOf = this.current;
    }
    return this.index;
  }

  /**
   * Resolves once everything acknowledged before the call is named by a manifest in S3: seals
   * the active segment, uploads, writes the manifest. Rejects if the tier stops or is fenced.
   */
  async flush(signal?: AbortSignal): Promise<void> {
    await this.log.seal();
    const active = this.log.activeSegment;
    const sealed = this.log.segments().filter((h) => h !== active && this.log.segmentSize(h) > 0);
    // A segment compacted or rewritten meanwhile is covered by what replaced it.
    const done = () => sealed.every((h) => !this.log.segments().includes(h) || this.inManifest(h));
    for (;;) {
      if (this.fencedFlag) throw new Error('fenced: a later start of this node took over; nothing more is uploaded');
      if (this.stopped) throw new Error('the S3 tier stopped before the flush completed');
      signal?.throwIfAborted();
      if (done()) return;
      await this.kick();
      if (done()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Flushes, then takes an index checkpoint of everything flushed and resolves once a manifest
   * names it (at once when the current manifest's checkpoint already covers all of its segments,
   * or when the log holds nothing). For a graceful stop: the next restore replays nothing.
   */
  async checkpointNow(signal?: AbortSignal): Promise<void> {
    if (!this.opts.checkpoint) return;
    await this.flush(signal);
    const covers = () => {
      const c = this.current?.checkpoint;
      return !!c && c.through === this.current!.segments.at(-1)?.name;
    };
    if (covers()) return;
    const want = this.captures + 1;
    for (;;) {
      if (this.fencedFlag) throw new Error('fenced: a later start of this node took over; nothing more is uploaded');
      if (this.stopped) throw new Error('the S3 tier stopped before the checkpoint was written');
      signal?.throwIfAborted();
      if (this.namedCapture >= want || this.emptyCapture >= want || covers()) return;
      if (!this.pendingCheckpoint) this.checkpointWanted = true; // again after a capture that failed or was dropped
      await this.kick();
      if (this.namedCapture >= want || this.emptyCapture >= want || covers()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** One pass; concurrent calls share it. */
  kick(): Promise<void> {
    if (this.stopped || this.fencedFlag || !this.gen) return Promise.resolve();
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<void> {
    const now = Date.now();
    this.track(now);
    const active = this.log.activeSegment;
    const since = this.firstSeen.get(active);
    if (since !== undefined && now - since >= this.opts.uploadIntervalMs / 2) await this.log.seal();
    // A pool: the next upload starts as soon as one lands, and the manifest moves on with each.
    for (;;) {
      this.startUploads();
      if (this.uploading.size === 0 || this.stopped) break;
      await Promise.race(this.uploading.values());
      if (this.stopped) return;
      await this.advanceManifest();
    }
    if (this.stopped) return;
    await this.advanceManifest();
    await this.checkpointStep();
    await this.evictOverBound();
    if (this.gcWanted || (!this.sweptAtStart && this.current)) {
      this.sweptAtStart = true;
      this.gcWanted = false;
      await this.collectGarbage();
    }
  }

  /** Writes a manifest if the uploaded prefix of the log changed. */
  private async advanceManifest(): Promise<void> {
    const next = this.nextManifest();
    if (!next) return;
    const { manifest, forget } = next;
    if (!sameSegments(manifest.segments, this.current?.segments) || manifest.checkpoint?.key !== this.current?.checkpoint?.key) {
      if (!(await this.writeManifest(manifest))) return;
    }
    // Removed segments no manifest needs any more: compaction may drop removals before them now.
    const named = new Set(this.current?.segments.map((x) => segmentId(x.name)));
    for (const id of forget) if (!named.has(id)) this.log.forgetRemoved(id);
  }

  /**
   * Keeps local bytes of segments the current manifest holds within `diskCacheBytes`, dropping
   * the least recently read first. Only what the manifest names goes: a restart finds it there.
   */
  private async evictOverBound(): Promise<void> {
    const bound = this.opts.diskCacheBytes;
    if (bound === undefined || this.stopped) return;
    const held = this.log.localSealed().filter((s) => this.remote.has(s.name, s.size));
    let bytes = held.reduce((n, s) => n + s.size, 0);
    if (bytes <= bound) return;
    held.sort((a, b) => a.lastRead - b.lastRead);
    for (const s of held) {
      if (bytes <= bound) break;
      await this.log.evict(s.segment);
      bytes -= s.size;
      this.obs.evicted?.(s.size);
    }
  }

  /**
   * Rewritten or removed segments whose earlier revision the manifest still names because the
   * writes that superseded what they dropped are not all in S3 yet (as of the last pass).
   */
  heldForHorizon(): number {
    return this.held;
  }

  /** Local bytes of segments S3 holds (what `diskCacheBytes` bounds). */
  cachedBytes(): number {
    if (!this.logRef) return 0;
    return this.log.localSealed().filter((s) => this.remote.has(s.name, s.size)).reduce((n, s) => n + s.size, 0);
  }

  private track(now: number): void {
    const live = new Set(this.log.segments());
    for (const h of live) if (!this.firstSeen.has(h) && this.log.segmentSize(h) > 0 && !this.uploaded.has(this.log.fileName(h))) this.firstSeen.set(h, now);
    for (const h of this.firstSeen.keys()) if (!live.has(h)) this.firstSeen.delete(h);
  }

  /** Uploaded with the bytes it has now (a segment never grows once sealed; this guards that). */
  private isUploaded(h: number, name: string): boolean {
    return this.uploaded.get(name)?.size === this.log.segmentSize(h);
  }

  private coveredById(h: number): boolean {
    return this.olderRevision(this.log.fileName(h)) !== undefined;
  }

  /** An uploaded earlier revision of a rewritten segment: it replays as the current one does. */
  private olderRevision(name: string): ManifestSegment | undefined {
    const s = this.uploadedById.get(segmentId(name));
    return s && segmentRev(s.name) < segmentRev(name) ? s : undefined;
  }

  private remember(s: ManifestSegment): void {
    this.uploaded.set(s.name, s);
    const id = segmentId(s.name);
    const prev = this.uploadedById.get(id);
    if (!prev || segmentRev(s.name) >= segmentRev(prev.name)) this.uploadedById.set(id, s);
  }

  private startUploads(): void {
    for (const h of this.log.segments()) {
      if (this.uploading.size >= this.concurrency) return;
      if (h === this.log.activeSegment || this.log.segmentSize(h) === 0) continue;
      const name = this.log.fileName(h);
      if (this.isUploaded(h, name) || this.uploading.has(name)) continue;
      const p = this.upload(h, name).finally(() => this.uploading.delete(name));
      this.uploading.set(name, p.catch(() => undefined));
    }
  }

  private async upload(h: number, name: string): Promise<void> {
    const gen = this.generationValue;
    const horizon = this.log.horizonOf(h);
    const key = this.opts.keys.segment(name, gen);
    await pRetry(async () => {
      if (this.stopped || this.fencedFlag) throw new AbortError('stopped');
      let data: Buffer;
      try {
        data = await this.log.readSegment(h);
      } catch (e) {
        throw new AbortError(`segment ${name} is gone locally: ${(e as Error).message}`); // compacted away meanwhile
      }
      const crc32 = await crc32Yielding(data);
      const t0 = process.hrtime.bigint();
      try {
        await this.opts.store.create(key, data, { signal: this.abort.signal });
      } catch (e) {
        // Ours from an attempt whose answer was lost: the same bytes are fine, others are not.
        if (!(e instanceof ObjectExistsError) || (await crc32Yielding(await this.opts.store.get(key))) !== crc32) throw e;
      }
      this.obs.uploaded?.(data.length, Number(process.hrtime.bigint() - t0) / 1e9);
      this.bytesSinceCheckpoint += data.length;
      this.horizons.set(name, horizon);
      this.remember({ name, key, size: data.length, crc32, generation: gen });
    }, {
      retries: Number.POSITIVE_INFINITY,
      minTimeout: 200,
      maxTimeout: 10_000,
      randomize: true,
      signal: this.abort.signal,
      shouldRetry: ({ error }) => !(error instanceof ObjectStorePermanentError && error.code === 'NoSuchBucket'),
      onFailedAttempt: ({ error, attemptNumber }) => {
        this.obs.uploadFailed?.((error as { code?: string }).code ?? error.name);
        if (attemptNumber <= 3 || attemptNumber % 20 === 0) this.obs.warn?.('segment upload failed; retrying', { segment: name, attempt: attemptNumber, err: error.message });
      },
    }).catch((e: Error) => {
      if (!this.stopped && !this.fencedFlag) this.obs.warn?.('segment upload abandoned', { segment: name, err: e.message });
    });
  }

  /**
   * The manifest the uploads now allow: the longest prefix of sealed segments with content in S3
   * whose every named revision has its liveness horizon within the prefix. A rewrite dropped
   * records superseded by records up to its horizon; named before those are in S3, a restore
   * would have neither. Until then the manifest keeps naming the newest earlier revision that
   * qualifies (the one it named before: GC keeps what a kept manifest names), and a segment
   * compaction removed whole stays named the same way. `forget`: removed ids it no longer needs.
   */
  private nextManifest(): { manifest: Manifest; forget: number[] } | undefined {
    const active = this.log.activeSegment;
    const revisions = new Map<number, ManifestSegment[]>(); // every uploaded revision by id, newest first
    for (const u of this.uploaded.values()) {
      const id = segmentId(u.name);
      const list = revisions.get(id);
      if (list) list.push(u);
      else revisions.set(id, [u]);
    }
    for (const list of revisions.values()) list.sort((a, b) => segmentRev(b.name) - segmentRev(a.name));
    const items: { id: number; h?: number; name?: string; horizon: number }[] = [];
    for (const h of this.log.segments()) {
      if (h === active) break;
      if (this.log.segmentSize(h) === 0) continue; // an empty sealed segment replays as nothing
      const name = this.log.fileName(h);
      items.push({ id: segmentId(name), h, name, horizon: this.log.horizonOf(h) });
    }
    for (const [id, horizon] of this.log.removedSegments()) items.push({ id, horizon });
    items.sort((a, b) => a.id - b.id);
    const reached = (u: ManifestSegment, reach: number) => this.met.has(u.name) || (this.horizons.get(u.name) ?? 0) <= reach;
    // The prefix decides which horizons it reaches, and a revision left out can shorten it:
    // start from the longest and shrink until the choice reaches as far as it assumed.
    let reach = Number.POSITIVE_INFINITY;
    let segments: ManifestSegment[];
    let forget: number[];
    let held: number;
    for (;;) {
      segments = [];
      forget = [];
      held = 0;
      let last = 0;
      for (const it of items) {
        const revs = revisions.get(it.id) ?? [];
        if (it.name === undefined) {
          if (it.horizon <= reach) forget.push(it.id);
          else {
            const older = revs.find((u) => reached(u, reach));
            if (older) {
              segments.push(older);
              held++;
            }
          }
          last = it.id;
          continue;
        }
        const rev = segmentRev(it.name);
        const current = this.isUploaded(it.h!, it.name) ? this.uploaded.get(it.name) : undefined;
        const u = current && (this.met.has(current.name) || it.horizon <= reach) ? current : revs.find((x) => segmentRev(x.name) < rev && reached(x, reach));
        if (!u) break;
        if (current && u !== current) held++;
        segments.push(u);
        last = it.id;
      }
      if (last >= reach) break;
      reach = last;
    }
    this.held = held;
    if (segments.length === 0 && !this.current) return undefined;
    let checkpoint = this.checkpoint;
    if (checkpoint && !checkpointFits(checkpoint, segments)) {
      // Stale for good once a revision it covers is neither the log's content of its id any
      // more (compaction rewrote or removed it) nor named; before, it waits (for uploads, or
      // for a rewrite's horizon).
      const local = new Set(this.log.segments().map((h) => this.log.fileName(h)));
      const named = new Set(segments.map((x) => x.name));
      const gone = checkpoint.segments.some((k) => {
        const p = this.opts.keys.parseSegment(k);
        return !p || (!local.has(p.name) && !named.has(p.name));
      });
      if (gone) this.checkpoint = undefined;
      checkpoint = undefined;
    }
    const manifest: Manifest = {
      format: 1, node: this.opts.keys.node, number: this.opts.nodeNumber, generation: this.generationValue,
      seq: this.seq + 1, writtenAt: new Date().toISOString(), segments, ...(checkpoint ? { checkpoint } : {}),
    };
    return { manifest, forget };
  }

  /**
   * Takes a checkpoint when one is due: after `everyBytes` uploaded since the last (a quarter of
   * that while the manifest names none, e.g. after compaction made it stale), or when asked
   * (`checkpointNow`). It is uploaded once every segment it covers is in S3, and the next
   * manifest names it. Never on the write path: the capture is one synchronous step at a seal.
   */
  private async checkpointStep(): Promise<void> {
    const taker = this.opts.checkpoint;
    if (!taker || this.stopped || this.fencedFlag) return;
    if (!this.pendingCheckpoint) {
      const due = this.checkpointWanted || this.bytesSinceCheckpoint >= taker.everyBytes
        || (!this.current?.checkpoint && this.bytesSinceCheckpoint >= taker.everyBytes / 4);
      if (!due) return;
      let c: EncodedCheckpoint | 'nothing' | undefined;
      const t0 = performance.now();
      try {
        c = await taker.capture();
      } catch (e) {
        // Not every pass: the next try waits for the next `everyBytes` (or a `checkpointNow` asking again).
        this.bytesSinceCheckpoint = 0;
        this.checkpointWanted = false;
        this.obs.warn?.('index checkpoint not taken', { err: (e as Error).message });
        return;
      }
      if (c === undefined) return; // not now: the next pass tries again
      this.checkpointWanted = false;
      this.bytesSinceCheckpoint = 0;
      const capture = ++this.captures;
      if (c === 'nothing') {
        this.emptyCapture = capture;
        return;
      }
      this.pendingCheckpoint = { ...c, capture, captureMs: Math.round(performance.now() - t0), failures: 0 };
    }
    const pending = this.pendingCheckpoint;
    const keys = pending.names.map((n) => this.uploaded.get(n)?.key);
    if (keys.some((k) => k === undefined)) {
      // It waits for its segments; one that compaction replaced before it landed never comes.
      const local = new Set(this.log.segments().map((h) => this.log.fileName(h)));
      if (pending.names.some((n, i) => keys[i] === undefined && !local.has(n))) this.pendingCheckpoint = undefined;
      return;
    }
    if (!(await this.checkGeneration())) return;
    const gen = this.generationValue;
    // One key for every attempt: a create that landed but whose answer was lost is found as ours.
    const key = (pending.key ??= this.opts.keys.checkpoint(gen, ++this.checkpointSeq));
    const crc32 = (pending.crc32 ??= await crc32Yielding(pending.body));
    try {
      await this.opts.store.create(key, pending.body, { signal: this.abort.signal });
    } catch (e) {
      // Ours from an attempt whose answer was lost (no one else writes this generation's keys).
      const ours = e instanceof ObjectExistsError && (await crc32Yielding(await this.opts.store.get(key).catch(() => Buffer.alloc(0)))) === crc32;
      if (!ours) {
        pending.failures++;
        if (!this.stopped && (pending.failures <= 3 || pending.failures % 20 === 0)) {
          this.obs.warn?.('index checkpoint not uploaded; retrying with the next pass', { key, attempt: pending.failures, err: (e as Error).message });
        }
        return;
      }
    }
    this.checkpoint = { key, size: pending.body.length, crc32, generation: gen, through: pending.names.at(-1)!, segments: keys as string[], objects: pending.objects };
    this.checkpointCapture = pending.capture;
    this.pendingCheckpoint = undefined;
    this.obs.checkpointWritten?.(pending.body.length, pending.objects);
    this.obs.info?.('index checkpoint in S3', { key, bytes: pending.body.length, objects: pending.objects, segments: keys.length, captureMs: pending.captureMs });
    await this.advanceManifest();
  }

  private async checkGeneration(): Promise<boolean> {
    let ok = true;
    try {
      ok = await this.gen!.current();
    } catch {
      return false; // the metadata store is unreachable: no verdict, so nothing is written or deleted now
    }
    if (!ok && !this.fencedFlag) {
      this.fencedFlag = true;
      this.abort.abort(new Error('fenced'));
      this.obs.fenced?.();
    }
    return ok;
  }

  /** Whether it was written (or found written: ours). */
  private async writeManifest(m: Manifest): Promise<boolean> {
    if (!(await this.checkGeneration())) return false;
    const key = this.opts.keys.manifest(m.generation, m.seq);
    try {
      await this.opts.store.create(key, encodeManifest(m), { signal: this.abort.signal });
    } catch (e) {
      if (!(e instanceof ObjectExistsError)) {
        this.obs.warn?.('manifest not written; retrying with the next pass', { key, err: (e as Error).message });
        return false;
      }
      // Ours from an attempt whose answer was lost (no one else writes this generation's keys).
    }
    this.seq = m.seq;
    if (m.checkpoint && m.checkpoint.key === this.checkpoint?.key) this.namedCapture = Math.max(this.namedCapture, this.checkpointCapture);
    if (this.current) this.previous = [this.current, ...this.previous].slice(0, KEEP_MANIFESTS);
    this.current = m;
    this.remote.setManifest(m);
    for (const x of m.segments) this.met.add(x.name);
    this.gcWanted = true; // once the pass's uploads are done: a listing per manifest would cost more than the uploads
    return true;
  }

  /**
   * Deletes manifests older than the last few, and segment objects that none of the kept
   * manifests names and that are not uploads of this process still waiting for a manifest (so,
   * at start, uploads cut off by a crash). Only while the generation is current: a fenced
   * process deletes nothing.
   */
  private async collectGarbage(): Promise<void> {
    const { store, keys } = this.opts;
    try {
      const manifests = (await store.list(keys.manifestsPrefix)).map((e) => e.key).filter((k) => keys.parseManifest(k));
      const currentKey = this.current ? keys.manifest(this.current.generation, this.current.seq) : undefined;
      const keep = new Set([currentKey, ...this.previous.map((m) => keys.manifest(m.generation, m.seq))].filter((k): k is string => !!k));
      const oldManifests = manifests.filter((k) => !keep.has(k) && (!currentKey || k < currentKey));
      const named = new Set<string>();
      // What a kept manifest's checkpoint points into is kept with it (it is in that manifest's
      // segments too, by checkpointFits; this says so where the deletion is decided).
      for (const m of [this.current, ...this.previous]) for (const k of [...(m?.segments ?? []).map((s) => s.key), ...(m?.checkpoint?.segments ?? [])]) named.add(k);
      const keptCheckpoints = new Set([this.current, ...this.previous].map((m) => m?.checkpoint?.key).filter((k): k is string => !!k));
      if (this.checkpoint) keptCheckpoints.add(this.checkpoint.key); // landed, named by the next manifest
      for (const k of this.checkpoint?.segments ?? []) named.add(k);
      const local = new Set(this.log.segments().map((h) => this.log.fileName(h)));
      const mine = new Set([...this.uploaded.values()].filter((s) => local.has(s.name)).map((s) => s.key));
      const gen = this.generationValue;
      const dead = (await store.list(keys.segmentsPrefix)).map((e) => e.key).filter((k) => {
        const p = keys.parseSegment(k);
        if (!p || named.has(k) || mine.has(k)) return false;
        // An earlier life's upload that no kept manifest names is garbage (cut off by a crash, or
        // a fenced process's); a later generation's is not ours to judge (it fences us).
        if (p.generation > gen) return false;
        if (p.generation < gen) return true;
        return !this.uploading.has(p.name);
      });
      // Checkpoints no kept manifest names: stale ones, a fenced process's, one cut off by a crash.
      const deadCheckpoints = (await store.list(keys.checkpointsPrefix)).map((e) => e.key).filter((k) => {
        const p = keys.parseCheckpoint(k);
        return !!p && !keptCheckpoints.has(k) && p.generation <= gen;
      });
      if (oldManifests.length + dead.length + deadCheckpoints.length === 0) return;
      if (!(await this.checkGeneration())) return;
      await store.delete([...oldManifests, ...dead, ...deadCheckpoints], { signal: this.abort.signal });
      // Forget what was deleted, so a later manifest can never name it.
      for (const k of dead) {
        const p = keys.parseSegment(k)!;
        if (this.uploaded.get(p.name)?.key === k) {
          this.uploaded.delete(p.name);
          this.horizons.delete(p.name);
          this.met.delete(p.name);
        }
        const id = segmentId(p.name);
        if (this.uploadedById.get(id)?.key === k) this.uploadedById.delete(id);
      }
      if (dead.length > 0) this.obs.info?.('deleted segments no manifest names', { segments: dead.length, manifests: oldManifests.length });
    } catch (e) {
      this.obs.warn?.('garbage collection in S3 failed; it runs again after the next upload', { err: (e as Error).message });
    }
  }
}

function segmentId(name: string): number {
  return Number(name.slice(0, 10));
}

function segmentRev(name: string): number {
  const m = /^\d{10}-(\d+)\.seg$/.exec(name);
  return m ? Number(m[1]) : 0;
}

function sameSegments(a: ManifestSegment[], b: ManifestSegment[] | undefined): boolean {
  return !!b && a.length === b.length && a.every((s, i) => s.key === b[i].key);
}
