import { InternalError } from '@loam/sdk/wire';
import { KINDS, type EngineState, type RecordKind } from './engine-state.js';
import { scanBatches, type ScannedRecord } from './log-scan.js';
import { setEndFlag, type LogRecord } from './record.js';
import type { SegmentStore } from './segment-store.js';

/**
 * Compaction rewrites a sealed segment in place: what it keeps stays at the same position in
 * log order (the same segment id), so replay applies every record in the order it was first
 * written. That is the rule compaction must hold — it never changes what a restart reads — and
 * rewriting in place holds it for every record type: copying records to the log head instead
 * would replay an old removal after a newer write of the same key (a delete resurrected over a
 * re-created object, an alias target reverted).
 *
 * Kept: live records (what the state points at), removals while an older segment exists (it
 * may hold what they removed), datasets. Dropped: superseded records and group markers. A
 * record found live but superseded while the rewrite is written is harmless: it still sits
 * before the newer record in log order.
 */
export interface CompactionResult {
  segments: number;
  bytesBefore: number;
  bytesAfter: number;
}

export class Compactor {
  /** Bytes of removals kept by the last rewrite of each segment: not garbage while older segments exist. */
  private readonly keptRemovals = new Map<number, number>();

  constructor(
    private readonly state: EngineState,
    private readonly store: SegmentStore,
    private readonly compactBelow: number,
  ) {}

  /** Compacts sealed segments whose share of bytes still needed fell below the threshold (or all). */
  async run(all: boolean, stop: () => boolean): Promise<CompactionResult> {
    const result: CompactionResult = { segments: 0, bytesBefore: 0, bytesAfter: 0 };
    for (const seg of this.store.segments()) {
      if (stop() || this.store.blocked) break;
      if (seg === this.store.activeSegment) continue;
      const size = this.store.segmentSize(seg);
      const oldest = this.store.hasOlder ? !this.store.hasOlder(seg) : this.store.segments()[0] === seg;
      const needed = (this.state.liveBytes.get(seg) ?? 0) + (oldest ? 0 : this.keptRemovals.get(seg) ?? 0);
      if (!all && size > 0 && needed / size >= this.compactBelow) continue;
      if (all && size > 0 && this.keptRemovals.has(seg) && needed >= size) continue; // nothing left to drop
      result.segments++;
      result.bytesBefore += size;
      result.bytesAfter += await this.compactSegment(seg);
    }
    return result;
  }

  private async compactSegment(seg: number): Promise<number> {
    const data = await this.store.readSegment(seg);
    const hasOlder = this.store.hasOlder ? this.store.hasOlder(seg) : this.store.segments().indexOf(seg) > 0;
    const kept: ScannedRecord[] = [];
    let removalBytes = 0;
    // In slices, yielding between them: a 64 MiB segment is too much for one turn of the loop.
    // Liveness may change between slices; that is harmless (see the top of this file).
    for (let from = 0; from < data.length;) {
      const { end, damage } = scanBatches(data, (batch) => {
        for (const r of batch) {
          const kind = KINDS[r.record.type] as RecordKind<LogRecord>;
          if (kind.live(this.state, r.record, { segment: seg, offset: r.offset, length: r.length })) kept.push(r);
          else if (kind.removal(r.record) && hasOlder) {
            kept.push(r);
            removalBytes += r.length;
          }
        }
      }, from, from + SLICE_BYTES);
      if (damage) throw new InternalError(`segment ${seg} is damaged at ${damage.offset} (${damage.reason}); not compacting it`);
      from = end;
      if (from < data.length) await yieldToLoop();
    }
    if (kept.length === 0) {
      await this.store.remove(seg);
      this.state.liveBytes.delete(seg);
      this.keptRemovals.delete(seg);
      return 0;
    }
    const content = Buffer.allocUnsafe(kept.reduce((n, r) => n + r.length, 0));
    const offsets: number[] = [];
    let p = 0;
    for (const r of kept) {
      offsets.push(p);
      data.copy(content, p, r.offset, r.offset + r.length);
      setEndFlag(content.subarray(p, p + r.length)); // each kept record is a batch of its own
      p += r.length;
    }
    const fresh = await this.store.rewrite(seg, content);
    // Both contents stay readable until retire(): repoint the state a slice at a time. Each
    // entry points at the old place or the new one, and either reads the same record.
    for (let i = 0; i < kept.length; i++) {
      const r = kept[i];
      (KINDS[r.record.type] as RecordKind<LogRecord>).relocate(this.state, r.record, { segment: seg, offset: r.offset, length: r.length }, { segment: fresh, offset: offsets[i], length: r.length });
      if (i % RELOCATE_SLICE === RELOCATE_SLICE - 1) await yieldToLoop();
    }
    await this.store.retire(seg);
    this.state.liveBytes.delete(seg);
    this.keptRemovals.delete(seg);
    this.keptRemovals.set(fresh, removalBytes);
    return content.length;
  }
}

/** Bytes scanned, and records repointed, between two yields to the event loop. */
const SLICE_BYTES = 1024 * 1024;
const RELOCATE_SLICE = 4096;

function yieldToLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
