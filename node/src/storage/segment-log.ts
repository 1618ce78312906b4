import { LocalFiles, type AppendFile, type ReadFile, type SegmentFiles } from './segment-files.js';
import { GROUP_MARKER, type LogRecord } from './record.js';
import { isTornTail, scanBatches } from './log-scan.js';
import { CorruptLogError, type RecoveryReport, type SegmentStore, type WriteBlock } from './segment-store.js';

export { CorruptLogError, type RecoveryReport } from './segment-store.js';

/**
 * Segments on local disk, with group commit. Appends queue while a write is in flight and the
 * next write takes all of them, so concurrent committers share the cost of durability. Each
 * group write starts with a group marker (see record.ts), which recovery uses to tell a torn
 * tail from corruption. A batch never spans two segments.
 *
 * Files: `NNNNNNNNNN.seg` as appended; `NNNNNNNNNN-R.seg` after its R-th rewrite (compaction,
 * repair). The highest R of an id is its content; lower ones are leftovers of a crash between
 * the rename and the unlink, removed at open.
 */
export interface SegmentLogOptions {
  dir: string;
  maxSegmentBytes: number;
  /** Called with the seconds each durable group write took (metrics). */
  onFsync?: (seconds: number, bytes: number, batches: number) => void;
  /** The file layer (a fault injector in tests); local files in `dir` by default. */
  files?: SegmentFiles;
  /**
   * Sealed segments held elsewhere (S3) and not, or no longer, on local disk: replayed from
   * there at open, read from there after. A local file of the same segment (same or later
   * revision) wins.
   */
  remote?: RemoteSegments;
  /** Progress of replaying remote segments at open (a restore from S3 can take a while). */
  onRemoteReplay?: (done: number, of: number, bytes: number) => void;
  /**
   * An index checkpoint of the first segments of the log (`names`, log order, as the remote
   * store names them): they are opened without being read, `load` gets their handles (in the
   * order of `names`) before the first later segment replays, and only later ones replay. Used
   * only if the log's first segments are exactly those (a local file of the same name is the same
   * content; a later local revision is not) and the last of them is not the log's last;
   * otherwise every segment replays and the report's `checkpointSegments` stays unset.
   */
  checkpoint?: { names: string[]; load: (handles: number[]) => void };
}

/** Where sealed segments that are not on local disk are read from (the S3 tier). */
export interface RemoteSegments {
  /** File name -> size of every sealed segment the remote store holds. */
  list(): Map<string, number>;
  /** `check` says whether the bytes are right (a record's own checksum): if not, they are fetched again. */
  read(name: string, offset: number, length: number, check?: (buf: Buffer) => boolean): Promise<Buffer>;
  /** The whole segment, checked against its checksum. */
  readWhole(name: string): Promise<Buffer>;
}

/** Remote segments fetched ahead while replaying (each is a whole segment in memory). */
const REMOTE_PREFETCH = 4;

export interface RecoveredRecord {
  record: LogRecord;
  segment: number;
  offset: number;
  length: number;
}

interface Pending {
  buf: Buffer;
  resolve: (loc: { segment: number; offset: number }) => void;
  reject: (err: Error) => void;
}

const SEGMENT_RE = /^(\d{10})(?:-(\d+))?\.seg$/;
/** Group writes in flight at once: one being made durable while the next one is issued. */
export const MAX_INFLIGHT = 2;
/** Write errors after which appends can work again once the cause is gone. */
const RECOVERABLE = new Set(['ENOSPC', 'EDQUOT']);

export function segmentName(id: number, rev: number): string {
  return `${String(id).padStart(10, '0')}${rev > 0 ? `-${rev}` : ''}.seg`;
}

export function parseSegmentName(name: string): { id: number; rev: number } | undefined {
  const m = SEGMENT_RE.exec(name);
  return m ? { id: Number(m[1]), rev: m[2] ? Number(m[2]) : 0 } : undefined;
}

/** Handles of rewritten segments are numbered from here (appended segments: their id). */
const REWRITE_HANDLES = 2 ** 30;

interface Segment {
  id: number;
  rev: number;
  /** Acknowledged bytes. */
  size: number;
  /** Undefined while the segment is remote only (evicted, or restored without a local copy). */
  reader?: ReadFile;
  /** Replaced by a rewrite, still readable until retired; no longer in segments(). */
  retiring?: boolean;
  /** When it was last read (a counter, for least-recently-used eviction). */
  lastRead: number;
  /**
   * A rewrite's liveness horizon: the id of the last segment that may hold a record superseding
   * one this revision dropped (see `horizonOf`).
   */
  horizon?: number;
}

export class SegmentLog implements SegmentStore {
  private readonly files: SegmentFiles;
  private readonly maxSegmentBytes: number;
  private readonly onFsync?: SegmentLogOptions['onFsync'];
  /** By handle: an appended segment's handle is its id, a rewritten one gets a new handle. */
  private readonly segs = new Map<number, Segment>();
  private nextHandle = REWRITE_HANDLES;
  private active = 0;
  private activeFile!: AppendFile;
  /** Bytes of the active segment reserved by groups started (acknowledged or in flight). */
  private activeSize = 0;
  private queue: Pending[] = [];
  private inflight = 0;
  private rolling = false;
  private sealing?: Promise<number | undefined>;
  /** The acknowledgement of the last group started: each waits for the one before. */
  private ordered: Promise<void> = Promise.resolve();
  private readonly pending = new Set<Promise<void>>();
  private closed = false;
  private block?: WriteBlock;
  private recovering?: Promise<void>;
  /** While blocked: the bytes of the failed writes were cut, the next write may go. */
  private tailCut = false;

  private readonly remote?: RemoteSegments;
  private reads = 0;
  /**
   * With remote segments: ids removed whole, with their horizon. S3 may still hold (and a
   * manifest name) an earlier revision until the tier forgets them.
   */
  private readonly removed = new Map<number, number>();

  private constructor(opts: SegmentLogOptions) {
    this.remote = opts.remote;
    this.files = opts.files ?? new LocalFiles(opts.dir);
    this.maxSegmentBytes = opts.maxSegmentBytes;
    this.onFsync = opts.onFsync;
  }

  /**
   * Opens the log, replaying every whole batch through `onBatch` in log order. A torn tail of
   * the last segment is cut (and reported). Any other damage throws CorruptLogError naming the
   * file and offset: it is never cut, since it holds acknowledged writes (`loam repair`).
   */
  static async open(opts: SegmentLogOptions, onBatch: (batch: RecoveredRecord[]) => void): Promise<{ log: SegmentLog; report: RecoveryReport }> {
    const log = new SegmentLog(opts);
    const files = log.files;
    const names = new Map<number, string>();
    for (const f of files.list()) {
      if (f.endsWith('.seg.tmp')) {
        await files.remove(f); // a rewrite cut off before its rename
        continue;
      }
      const p = parseSegmentName(f);
      if (!p) continue;
      const cur = names.get(p.id);
      const curRev = cur ? parseSegmentName(cur)!.rev : -1;
      if (p.rev > curRev) {
        if (cur) await files.remove(cur);
        names.set(p.id, f);
      } else {
        await files.remove(f);
      }
    }
    // Remote segments that have no local file of the same or a later revision.
    const remoteNames = new Map<number, string>();
    const remoteSizes = opts.remote?.list() ?? new Map<string, number>();
    for (const [name] of remoteSizes) {
      const p = parseSegmentName(name);
      if (!p) continue;
      const local = names.get(p.id);
      if (local && parseSegmentName(local)!.rev >= p.rev) continue;
      const cur = remoteNames.get(p.id);
      if (!cur || parseSegmentName(cur)!.rev < p.rev) remoteNames.set(p.id, name);
    }
    for (const id of remoteNames.keys()) {
      const local = names.get(id);
      if (local) {
        await files.remove(local); // an older revision than S3 holds: S3's is the content
        names.delete(id);
      }
    }
    const ids = [...new Set([...names.keys(), ...remoteNames.keys()])].sort((a, b) => a - b);
    const report: RecoveryReport = { segments: ids.length, records: 0, bytes: 0, truncatedBytes: 0 };
    const chosen = (id: number) => remoteNames.get(id) ?? names.get(id);
    const ck = opts.checkpoint;
    const usable = !!ck && ck.names.length > 0 && ck.names.length < ids.length + 1
      && ids.slice(0, ck.names.length).every((id, i) => chosen(id) === ck.names[i] && remoteSizes.has(ck.names[i]))
      && (remoteNames.has(ids[ck.names.length - 1]) || ck.names.length < ids.length);
    const covered = new Map(usable ? ck!.names.map((n, i) => [n, i]) : []);
    const coveredHandles: number[] = [];
    const loadCheckpoint = () => {
      if (!opts.checkpoint || coveredHandles.length === 0) return;
      opts.checkpoint.load(coveredHandles);
      report.checkpointSegments = coveredHandles.length;
      coveredHandles.length = 0;
    };
    // Remote segments are fetched a few ahead of the replay (not the ones the checkpoint covers).
    const remoteIds = ids.filter((id) => remoteNames.has(id) && !covered.has(remoteNames.get(id)!));
    const fetches = new Map<number, Promise<Buffer>>();
    const fetchAhead = (from: number) => {
      for (const id of remoteIds.slice(from, from + REMOTE_PREFETCH)) {
        if (!fetches.has(id)) {
          const p = opts.remote!.readWhole(remoteNames.get(id)!);
          p.catch(() => undefined); // awaited in order below
          fetches.set(id, p);
        }
      }
    };
    let remoteDone = 0;
    let remoteBytes = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const remoteName = remoteNames.get(id);
      const coveredName = chosen(id)!;
      if (covered.has(coveredName)) {
        const p = parseSegmentName(coveredName)!;
        const handle = p.rev === 0 ? id : log.nextHandle++;
        const size = remoteSizes.get(coveredName)!;
        // A local copy (the same content as the upload of this name) is read locally, never replayed.
        const reader = remoteName === undefined ? files.openRead(coveredName) : undefined;
        log.segs.set(handle, { id, rev: p.rev, size, reader, lastRead: 0 });
        coveredHandles[covered.get(coveredName)!] = handle;
        report.bytes += size;
        if (i === ids.length - 1) {
          loadCheckpoint();
          await log.createSegment(id + 1);
        }
        continue;
      }
      loadCheckpoint(); // before the first segment after the checkpoint replays
      if (remoteName) {
        fetchAhead(remoteDone);
        const data = await fetches.get(id)!;
        fetches.delete(id);
        const p = parseSegmentName(remoteName)!;
        const handle = p.rev === 0 ? id : log.nextHandle++;
        const { end, damage } = scanBatches(data, (batch) => {
          onBatch(batch.map((r) => ({ record: r.record, segment: handle, offset: r.offset, length: r.length })));
          report.records += batch.length;
        });
        // Checked against its checksum when fetched: damage here was there when it was uploaded.
        if (damage) throw new CorruptLogError(`log segment ${remoteName} from S3 is damaged at offset ${damage.offset} (${damage.reason})`, remoteName, damage.offset);
        log.segs.set(handle, { id, rev: p.rev, size: end, lastRead: 0 });
        report.bytes += end;
        remoteDone++;
        remoteBytes += end;
        opts.onRemoteReplay?.(remoteDone, remoteIds.length, remoteBytes);
        if (i === ids.length - 1) await log.createSegment(id + 1); // appends go to a local segment
        continue;
      }
      const name = names.get(id)!;
      const rev = parseSegmentName(name)!.rev;
      const handle = rev === 0 ? id : log.nextHandle++;
      const last = i === ids.length - 1;
      const data = await files.readWhole(name);
      const { end, damage } = scanBatches(data, (batch) => {
        onBatch(batch.map((r) => ({ record: r.record, segment: handle, offset: r.offset, length: r.length })));
        report.records += batch.length;
      });
      if (damage) {
        const where = `${files.dir}/${name} at offset ${damage.offset} (${damage.reason})`;
        if (!last) throw new CorruptLogError(`log segment ${where} is damaged; it was sealed, so this is corruption, not a torn write. Nothing was changed; see \`loam repair --data DIR\``, name, damage.offset);
        if (!isTornTail(damage, MAX_INFLIGHT)) {
          throw new CorruptLogError(
            `log segment ${where} is damaged, and ${damage.groupsAfter} complete write groups follow it, so it is corruption of acknowledged data, not a torn write. Nothing was changed; \`loam repair --data DIR\` reports what can be kept`,
            name, damage.offset);
        }
        report.truncatedBytes = data.length - damage.goodEnd;
        report.truncatedReason = damage.reason;
        await files.truncate(name, damage.goodEnd);
      }
      const size = damage ? damage.goodEnd : end;
      log.segs.set(handle, { id, rev, size, reader: files.openRead(name), lastRead: 0 });
      report.bytes += size;
      if (last) {
        log.active = handle;
        log.activeSize = size;
        log.activeFile = await files.openAppend(name);
      }
    }
    if (ids.length === 0) await log.createSegment(1);
    // A local rewrite's horizon was not kept: whatever superseded what it dropped is in the log
    // as it opened, so its last segment bounds it.
    const last = ids.at(-1) ?? 0;
    for (const s of log.segs.values()) if (s.rev > 0 && s.reader) s.horizon = last;
    return { log, report };
  }

  private seg(handle: number): Segment {
    const s = this.segs.get(handle);
    if (!s) throw new Error(`segment ${handle} is not open`);
    return s;
  }

  private name(handle: number): string {
    const s = this.seg(handle);
    return segmentName(s.id, s.rev);
  }

  private async createSegment(id: number): Promise<void> {
    const name = segmentName(id, 0);
    await this.files.create(name);
    const file = await this.files.openAppend(name);
    if (this.activeFile) await this.activeFile.close();
    this.active = id;
    this.activeFile = file;
    this.activeSize = 0;
    this.segs.set(id, { id, rev: 0, size: 0, reader: this.files.openRead(name), lastRead: 0 });
  }

  get activeSegment(): number {
    return this.active;
  }

  segments(): number[] {
    return [...this.segs].filter(([, s]) => !s.retiring).sort((a, b) => a[1].id - b[1].id).map(([h]) => h);
  }

  segmentSize(handle: number): number {
    return this.segs.get(handle)?.size ?? 0;
  }

  /** Bytes of segments on local disk (remote-only ones are not). */
  get totalBytes(): number {
    let n = 0;
    for (const s of this.segs.values()) if (s.reader) n += s.size;
    return n;
  }

  get blocked(): WriteBlock | undefined {
    return this.block;
  }

  append(buf: Buffer): Promise<{ segment: number; offset: number }> {
    if (this.closed) return Promise.reject(new Error('log is closed'));
    if (this.block) {
      if (!this.block.recoverable) return Promise.reject(new Error(this.block.message));
      // The cause may be gone (space freed): put the log back in order, then try.
      return this.recover().then(() => this.append(buf), () => Promise.reject(new Error(this.block?.message ?? 'log write failed')));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ buf, resolve, reject });
      this.kick();
    });
  }

  /**
   * Starts group writes while fewer than MAX_INFLIGHT are running: what queued up while a write
   * was in flight goes out as the next group without waiting for it. Groups are acknowledged
   * strictly in log order, so a crash can only lose groups after the first one not yet durable,
   * none of which was acknowledged (recovery cuts the log there).
   */
  private kick(): void {
    while (this.queue.length > 0 && this.inflight < MAX_INFLIGHT && !this.block && !this.rolling && !this.recovering) {
      let total = GROUP_MARKER.length;
      for (const p of this.queue) total += p.buf.length;
      if (this.activeSize > 0 && this.activeSize + total > this.maxSegmentBytes) {
        // A new segment starts only when nothing is in flight on the current one.
        if (this.inflight > 0) return;
        this.rolling = true;
        this.track(this.createSegment(this.seg(this.active).id + 1).then(
          () => {
            this.rolling = false;
            this.kick();
          },
          (e) => {
            this.rolling = false;
            this.fail(e as Error, []);
          },
        ));
        return;
      }
      const batch = this.queue;
      this.queue = [];
      const segment = this.active;
      const base = this.activeSize;
      this.activeSize += total; // reserved now; the next group goes after it
      // Gathered, not copied: the marker and every batch go out in one durable write.
      const data = [GROUP_MARKER, ...batch.map((p) => p.buf)];
      this.inflight++;
      const t0 = process.hrtime.bigint();
      const written = this.activeFile.writeAt(data, base);
      const previous = this.ordered;
      this.ordered = this.track((async () => {
        let error: Error | undefined;
        try {
          await written;
          this.onFsync?.(Number(process.hrtime.bigint() - t0) / 1e9, total, batch.length);
        } catch (e) {
          error = e as Error;
        }
        await previous; // acknowledge in log order
        this.inflight--;
        if (error || this.block) {
          this.fail(error ?? new Error(this.block!.message), batch);
          return;
        }
        const seg = this.seg(segment);
        seg.size = Math.max(seg.size, base + total);
        let offset = base + GROUP_MARKER.length;
        for (const p of batch) {
          p.resolve({ segment, offset });
          offset += p.buf.length;
        }
        this.kick();
      })());
    }
  }

  /**
   * A failed write leaves the bytes after the last acknowledged group unknown, so nothing more
   * is appended until they are cut. After a full disk (recoverable) they are cut at once, before
   * the failed appends are rejected, so those rejections can say nothing was applied
   * (`notApplied`); the next append or probe then tries to write again. After any other error
   * the log stays refused (the node must restart), and what a restart finds is unknown.
   */
  private fail(e: Error, batch: Pending[]): void {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    if (!this.block) {
      const recoverable = RECOVERABLE.has(code);
      this.block = { reason: code, recoverable, message: `log write failed (${code}): ${e.message}${recoverable ? '; writes resume once space is freed' : '; the node must restart'}` };
    }
    const failed = [...batch, ...this.queue];
    this.queue = [];
    const reject = (notApplied: boolean) => {
      const err = new Error(this.block?.message ?? `log write failed (${code})`) as NodeJS.ErrnoException & { notApplied?: boolean };
      err.code = code;
      if (notApplied) err.notApplied = true;
      for (const p of failed) p.reject(err);
    };
    if (!this.block.recoverable) {
      reject(false);
      return;
    }
    void this.cutTail().then(() => reject(true), () => reject(false));
  }

  /** Cuts the active segment back to its acknowledged bytes (once every group in flight is done). */
  private cutTail(): Promise<void> {
    if (this.recovering) return this.recovering;
    const p = (async () => {
      while (this.inflight > 0 || this.rolling) await Promise.allSettled([...this.pending]);
      if (this.tailCut) return;
      const acked = this.seg(this.active).size;
      try {
        await this.files.truncate(this.name(this.active), acked);
      } catch (e) {
        // The bytes after the last acknowledged write cannot be cut: no more writes here.
        if (this.block) this.block = { ...this.block, recoverable: false, message: `${this.block.message}; cutting the failed write failed too (${(e as Error).message}): the node must restart` };
        throw e;
      }
      this.activeSize = acked;
      this.tailCut = true;
    })();
    // Cleared once settled (the body may finish before this assignment would have been seen).
    this.recovering = p;
    void p.then(() => undefined, () => undefined).then(() => {
      if (this.recovering === p) this.recovering = undefined;
      this.kick();
    });
    return p;
  }

  /** Lifts a recoverable block once the failed bytes are cut: the next write tries the disk again. */
  private async recover(): Promise<void> {
    if (!this.block) return;
    if (!this.block.recoverable) throw new Error(this.block.message);
    await this.cutTail();
    if (!this.block) return; // lifted meanwhile by another append's recovery
    if (!this.block.recoverable || !this.tailCut) throw new Error(this.block.message);
    this.block = undefined;
    this.tailCut = false;
    this.kick();
  }

  /** Tries to lift a recoverable block and to write an empty group: true if appends work. */
  async probe(): Promise<boolean> {
    if (this.closed) return false;
    if (!this.block) return true;
    if (!this.block.recoverable) return false;
    try {
      await this.append(Buffer.alloc(0));
      return true;
    } catch {
      return false;
    }
  }

  private track(p: Promise<void>): Promise<void> {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
    return p;
  }

  /** The file name of a segment (`NNNNNNNNNN[-R].seg`): stable across restarts, unlike handles of rewrites. */
  fileName(segment: number): string {
    return this.name(segment);
  }

  /** The handle of the segment whose file is `name`, if it is open. */
  handleOf(name: string): number | undefined {
    const p = parseSegmentName(name);
    if (!p) return undefined;
    for (const [h, s] of this.segs) if (s.id === p.id && s.rev === p.rev && !s.retiring) return h;
    return undefined;
  }

  /**
   * Seals the active segment now: the groups in flight on it finish, and the next append goes
   * to a new segment. Resolves with the sealed handle, or undefined when the active segment is
   * empty (or writes are refused, or the log is closed).
   */
  seal(): Promise<number | undefined> {
    this.sealing ??= this.sealOnce().finally(() => (this.sealing = undefined));
    return this.sealing;
  }

  private async sealOnce(): Promise<number | undefined> {
    // Everything that sets `rolling` or `recovering` is tracked in `pending`, so these waits end.
    while ((this.rolling || this.recovering) && this.pending.size > 0) await Promise.allSettled([...this.pending]);
    if (this.closed || this.block || this.rolling || this.activeSize === 0) return undefined;
    this.rolling = true; // no group starts meanwhile
    try {
      while (this.inflight > 0) await Promise.allSettled([...this.pending]);
      if (this.block || this.activeSize === 0) return undefined;
      const sealed = this.active;
      await this.track(this.createSegment(this.seg(this.active).id + 1));
      return sealed;
    } finally {
      this.rolling = false;
      this.kick();
    }
  }

  /** Local reads are synchronous underneath (a page-cache hit costs microseconds). */
  read(segment: number, offset: number, length: number, check?: (buf: Buffer) => boolean): Promise<Buffer> {
    try {
      const s = this.seg(segment);
      s.lastRead = ++this.reads;
      if (!s.reader) return this.remote!.read(segmentName(s.id, s.rev), offset, length, check);
      return Promise.resolve(s.reader.read(offset, length));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  readSegment(segment: number): Promise<Buffer> {
    const s = this.seg(segment);
    if (!s.reader) return this.remote!.readWhole(segmentName(s.id, s.rev));
    return this.files.readWhole(this.name(segment));
  }

  /** Sealed segments on local disk, with their sizes and when each was last read. */
  localSealed(): { segment: number; name: string; size: number; lastRead: number }[] {
    const out: { segment: number; name: string; size: number; lastRead: number }[] = [];
    for (const [h, s] of this.segs) if (s.reader && h !== this.active && !s.retiring) out.push({ segment: h, name: segmentName(s.id, s.rev), size: s.size, lastRead: s.lastRead });
    return out;
  }

  /** Whether a segment is held only remotely. */
  isRemote(segment: number): boolean {
    return this.segs.get(segment)?.reader === undefined;
  }

  /**
   * Drops the local file of a sealed segment that the remote store holds whole: reads go there
   * from now on. The caller must know the remote copy is complete (uploaded and in a manifest).
   */
  async evict(segment: number): Promise<void> {
    // Gone already: compaction may retire or remove a segment between the caller's listing and here.
    const s = this.segs.get(segment);
    if (!s || segment === this.active || !s.reader || s.retiring || !this.remote) return;
    const name = segmentName(s.id, s.rev);
    if (this.remote.list().get(name) !== s.size) throw new Error(`invariant: segment ${name} is not held remotely at its size`);
    s.reader.close();
    s.reader = undefined;
    await this.files.remove(name);
  }

  /**
   * The liveness horizon of a rewrite made now: the caller judged liveness against state that
   * only records already appended built, so every record superseding one it dropped is in the
   * active segment or before it (before it, when the active one holds nothing acknowledged).
   */
  private horizonNow(): number {
    const a = this.seg(this.active);
    return a.size > 0 ? a.id : a.id - 1;
  }

  /**
   * The horizon of a segment's content: 0 for appended content; for a rewrite, the id of the
   * last segment that may hold a record superseding one it dropped. A restore that replays this
   * revision must replay every segment up to there too, or the dropped record is simply lost.
   */
  horizonOf(segment: number): number {
    return this.seg(segment).horizon ?? 0;
  }

  /** Ids removed whole (with remote segments): id -> horizon, as for a rewrite. */
  removedSegments(): ReadonlyMap<number, number> {
    return this.removed;
  }

  /** The remote store no longer names any revision of a removed segment. */
  forgetRemoved(id: number): void {
    this.removed.delete(id);
  }

  hasOlder(segment: number): boolean {
    const list = this.segments();
    if (list.indexOf(segment) > 0) return true;
    const id = this.seg(segment).id;
    for (const r of this.removed.keys()) if (r < id) return true; // S3 may still replay it
    return false;
  }

  async rewrite(segment: number, content: Buffer): Promise<number> {
    if (segment === this.active) throw new Error('invariant: cannot rewrite the active segment');
    const old = this.seg(segment);
    const rev = old.rev + 1;
    const name = segmentName(old.id, rev);
    const horizon = this.horizonNow();
    await this.files.replace(name, content);
    // From here a restart reads the new content; this process reads both until retire(old).
    const handle = this.nextHandle++;
    this.segs.set(handle, { id: old.id, rev, size: content.length, reader: this.files.openRead(name), lastRead: 0, horizon });
    old.retiring = true;
    return handle;
  }

  async retire(segment: number): Promise<void> {
    const s = this.seg(segment);
    if (!s.retiring) throw new Error(`invariant: segment ${segment} was not rewritten`);
    this.segs.delete(segment);
    if (!s.reader) return; // remote only: nothing local to remove
    s.reader.close();
    await this.files.remove(segmentName(s.id, s.rev)).catch(() => undefined); // a leftover is removed at the next open
  }

  async remove(segment: number): Promise<void> {
    if (segment === this.active) throw new Error('invariant: cannot remove the active segment');
    const s = this.seg(segment);
    if (this.remote) this.removed.set(s.id, this.horizonNow());
    this.segs.delete(segment);
    if (!s.reader) return; // remote only: nothing local to remove
    s.reader.close();
    await this.files.remove(segmentName(s.id, s.rev));
  }

  /** Waits for queued appends, then closes every file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true; // refuse new appends; groups already queued or in flight finish
    while (this.pending.size > 0 || this.recovering || (this.queue.length > 0 && !this.block)) {
      if (this.recovering) await this.recovering.catch(() => undefined);
      else if (this.pending.size > 0) await Promise.allSettled([...this.pending]);
      else this.kick();
    }
    await this.activeFile.close().catch(() => undefined);
    for (const s of this.segs.values()) s.reader?.close();
    this.segs.clear();
  }
}
