import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { checkFrame, decodeFrame, frameFlags, FLAG_END, type LogRecord } from './record.js';

/**
 * Append-only segment files with group commit. Appends queue while a write+fsync is in flight
 * and the next flush writes all of them with one write and one fdatasync, so concurrent
 * committers share the cost of durability. A batch never spans two segments.
 */
export interface SegmentLogOptions {
  dir: string;
  maxSegmentBytes: number;
  /** Called with the seconds each fdatasync took (metrics). */
  onFsync?: (seconds: number, bytes: number, batches: number) => void;
}

export interface RecoveredRecord {
  record: LogRecord;
  segment: number;
  offset: number;
  length: number;
}

export interface RecoveryReport {
  segments: number;
  records: number;
  bytes: number;
  /** Bytes cut from the tail of the last segment (a torn or corrupt tail). */
  truncatedBytes: number;
  truncatedReason?: string;
}

/** A sealed (non-last) segment failed its checksums: that is corruption, not a torn write. */
export class CorruptLogError extends Error {}

interface Pending {
  buf: Buffer;
  resolve: (loc: { segment: number; offset: number }) => void;
  reject: (err: Error) => void;
}

const SEGMENT_RE = /^(\d{10})\.seg$/;
/** Group writes in flight at once: one being made durable while the next one is issued. */
const MAX_INFLIGHT = 2;
/** Read-write, every write durable (data and the metadata needed to read it) when it returns. */
const DSYNC_RW = fs.constants.O_RDWR | fs.constants.O_DSYNC;

export class SegmentLog {
  private readonly dir: string;
  private readonly maxSegmentBytes: number;
  private readonly onFsync?: SegmentLogOptions['onFsync'];
  private readonly readFds = new Map<number, number>();
  private readonly sizes = new Map<number, number>();
  private active = 0;
  private activeHandle!: fsp.FileHandle;
  private activeSize = 0;
  private queue: Pending[] = [];
  private inflight = 0;
  private rolling = false;
  /** The acknowledgement of the last group started: each waits for the one before. */
  private ordered: Promise<void> = Promise.resolve();
  private readonly pending = new Set<Promise<void>>();
  private closed = false;
  /** Set when a write or fsync failed: after that the file's durable state is unknown. */
  failure?: Error;

  private constructor(opts: SegmentLogOptions) {
    this.dir = opts.dir;
    this.maxSegmentBytes = opts.maxSegmentBytes;
    this.onFsync = opts.onFsync;
  }

  /**
   * Opens the log in `dir`, replaying every complete batch through `onBatch` in log order.
   * A torn or corrupt tail of the last segment is cut (and reported); damage anywhere else
   * throws CorruptLogError, because sealed segments were fsynced whole.
   */
  static async open(opts: SegmentLogOptions, onBatch: (batch: RecoveredRecord[]) => void): Promise<{ log: SegmentLog; report: RecoveryReport }> {
    const log = new SegmentLog(opts);
    fs.mkdirSync(opts.dir, { recursive: true });
    const ids = fs.readdirSync(opts.dir).map((f) => SEGMENT_RE.exec(f)).filter((m) => m !== null).map((m) => Number(m![1])).sort((a, b) => a - b);
    const report: RecoveryReport = { segments: ids.length, records: 0, bytes: 0, truncatedBytes: 0 };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const last = i === ids.length - 1;
      const file = log.file(id);
      const data = fs.readFileSync(file);
      let pos = 0;
      let batchStart = 0;
      let batch: RecoveredRecord[] = [];
      let bad: string | undefined;
      while (pos < data.length) {
        const check = checkFrame(data, pos);
        if (!check.ok) {
          bad = check.reason;
          break;
        }
        let record: LogRecord;
        try {
          record = decodeFrame(data, pos);
        } catch (e) {
          bad = `undecodable record: ${(e as Error).message}`;
          break;
        }
        batch.push({ record, segment: id, offset: pos, length: check.size });
        pos += check.size;
        if (frameFlags(data, pos - check.size) & FLAG_END) {
          onBatch(batch);
          report.records += batch.length;
          batch = [];
          batchStart = pos;
        }
      }
      if (bad === undefined && batch.length > 0) bad = 'batch without its end record';
      if (bad !== undefined) {
        if (!last) throw new CorruptLogError(`segment ${file} is damaged at offset ${batchStart} (${bad}); it was sealed, so this is corruption, not a torn write`);
        report.truncatedBytes = data.length - batchStart;
        report.truncatedReason = bad;
        const fd = fs.openSync(file, 'r+');
        try {
          fs.ftruncateSync(fd, batchStart);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
      }
      const size = bad !== undefined ? batchStart : data.length;
      log.sizes.set(id, size);
      report.bytes += size;
      log.readFds.set(id, fs.openSync(file, 'r'));
    }
    const lastId = ids.length ? ids[ids.length - 1] : 0;
    if (lastId === 0) {
      await log.createSegment(1);
    } else {
      log.active = lastId;
      log.activeSize = log.sizes.get(lastId)!;
      log.activeHandle = await fsp.open(log.file(lastId), DSYNC_RW);
    }
    return { log, report };
  }

  private file(id: number): string {
    return path.join(this.dir, `${String(id).padStart(10, '0')}.seg`);
  }

  private async createSegment(id: number): Promise<void> {
    await (await fsp.open(this.file(id), 'wx+')).close();
    const handle = await fsp.open(this.file(id), DSYNC_RW);
    await handle.sync();
    this.syncDir();
    if (this.activeHandle) await this.activeHandle.close();
    this.active = id;
    this.activeHandle = handle;
    this.activeSize = 0;
    this.sizes.set(id, 0);
    this.readFds.set(id, fs.openSync(this.file(id), 'r'));
  }

  private syncDir(): void {
    const fd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  get activeSegment(): number {
    return this.active;
  }

  /** Ids of all segments, oldest first. */
  segments(): number[] {
    return [...this.sizes.keys()].sort((a, b) => a - b);
  }

  segmentSize(id: number): number {
    return this.sizes.get(id) ?? 0;
  }

  get totalBytes(): number {
    let n = 0;
    for (const s of this.sizes.values()) n += s;
    return n;
  }

  /** Appends one batch; resolves when it is durable, with where it landed. */
  append(buf: Buffer): Promise<{ segment: number; offset: number }> {
    if (this.closed) return Promise.reject(new Error('log is closed'));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.queue.push({ buf, resolve, reject });
      this.kick();
    });
  }

  /**
   * Starts group writes while fewer than MAX_INFLIGHT are running: what queued up while a write
   * was in flight goes out as the next group without waiting for it. Groups are acknowledged
   * strictly in log order, so a crash can only lose groups after the first one not yet durable,
   * none of which was acknowledged (recovery cuts the log at that hole).
   */
  private kick(): void {
    while (this.queue.length > 0 && this.inflight < MAX_INFLIGHT && !this.failure && !this.rolling) {
      let total = 0;
      for (const p of this.queue) total += p.buf.length;
      if (this.activeSize > 0 && this.activeSize + total > this.maxSegmentBytes) {
        // A new segment starts only when nothing is in flight on the current one.
        if (this.inflight > 0) return;
        this.rolling = true;
        this.track(this.createSegment(this.active + 1).then(
          () => {
            this.rolling = false;
            this.kick();
          },
          (e) => this.fail(e as Error, []),
        ));
        return;
      }
      const batch = this.queue;
      this.queue = [];
      const segment = this.active;
      const base = this.activeSize;
      this.activeSize += total; // reserved now; the next group goes after it
      const data = batch.length === 1 ? batch[0].buf : Buffer.concat(batch.map((p) => p.buf), total);
      this.inflight++;
      const t0 = process.hrtime.bigint();
      const written = this.writeAt(data, base);
      const previous = this.ordered;
      this.ordered = this.track((async () => {
        let error: Error | undefined;
        try {
          await written;
          this.onFsync?.(Number(process.hrtime.bigint() - t0) / 1e9, data.length, batch.length);
        } catch (e) {
          error = e as Error;
        }
        await previous; // acknowledge in log order
        this.inflight--;
        if (error || this.failure) {
          this.fail(error ?? this.failure!, batch);
          return;
        }
        this.sizes.set(segment, Math.max(this.sizes.get(segment) ?? 0, base + data.length));
        let offset = base;
        for (const p of batch) {
          p.resolve({ segment, offset });
          offset += p.buf.length;
        }
        this.kick();
      })());
    }
  }

  /** The active segment is open with O_DSYNC: the write returns once it is durable (one thread-pool trip). */
  private async writeAt(data: Buffer, base: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.activeHandle.write(data, done, data.length - done, base + done);
      done += bytesWritten;
    }
  }

  /**
   * After a failed write the kernel may have dropped dirty pages: nothing from here on can be
   * promised durable, so the log refuses every further append (the node must restart).
   */
  private fail(e: Error, batch: Pending[]): void {
    this.failure ??= new Error(`log write failed, node must restart: ${e.message}`);
    for (const p of batch) p.reject(this.failure);
    for (const p of this.queue) p.reject(this.failure);
    this.queue = [];
  }

  private track(p: Promise<void>): Promise<void> {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
    return p;
  }

  /** Reads bytes of a segment synchronously (a page-cache hit costs microseconds; no thread hop). */
  read(segment: number, offset: number, length: number): Buffer {
    const fd = this.readFds.get(segment);
    if (fd === undefined) throw new Error(`segment ${segment} is not open`);
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = fs.readSync(fd, buf, got, length - got, offset + got);
      if (n === 0) throw new Error(`short read of segment ${segment} at ${offset + got}`);
      got += n;
    }
    return buf;
  }

  async readSegment(segment: number): Promise<Buffer> {
    return fsp.readFile(this.file(segment));
  }

  /** Deletes a sealed segment whose live records were copied forward. */
  removeSegment(segment: number): void {
    if (segment === this.active) throw new Error('invariant: cannot remove the active segment');
    const fd = this.readFds.get(segment);
    if (fd !== undefined) fs.closeSync(fd);
    this.readFds.delete(segment);
    this.sizes.delete(segment);
    fs.unlinkSync(this.file(segment));
    this.syncDir();
  }

  /** Waits for queued appends, then closes every file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true; // refuse new appends; groups already queued or in flight finish
    while (this.pending.size > 0 || (this.queue.length > 0 && !this.failure)) {
      if (this.pending.size > 0) await Promise.allSettled([...this.pending]);
      else this.kick();
    }
    await this.activeHandle.close();
    for (const fd of this.readFds.values()) fs.closeSync(fd);
    this.readFds.clear();
  }
}
