import { checkFrame, countGroupMarkers, decodeFrame, frameFlags, isGroupMarker, GROUP_MARKER, FLAG_END, type LogRecord } from './record.js';

/**
 * Reading a segment's bytes back into batches, and judging damage. Shared by recovery (which
 * must never read damage as data) and `loam repair` (which keeps every intact batch).
 */
export interface ScannedRecord {
  record: LogRecord;
  offset: number;
  length: number;
}

export interface Damage {
  /** Where the first bad frame starts. */
  offset: number;
  /** The end of the last whole batch before it: where a torn tail is cut. */
  goodEnd: number;
  reason: string;
  /** Group markers after the damage: groups written after the damaged one. */
  groupsAfter: number;
}

/**
 * Walks `data` from `from`, handing every whole batch (a run of records ending with an END
 * flag) to `onBatch`, until the end, the first damaged frame, or the first batch boundary at
 * or past `until` (so long scans can yield between slices). Group markers are skipped.
 */
export function scanBatches(data: Buffer, onBatch: (batch: ScannedRecord[]) => void, from = 0, until = Infinity): { end: number; damage?: Damage } {
  let pos = from;
  let batchStart = from;
  let batch: ScannedRecord[] = [];
  const damaged = (reason: string, at: number) => ({ end: batchStart, damage: { offset: at, goodEnd: batchStart, reason, groupsAfter: countGroupMarkers(data, at) } });
  while (pos < data.length) {
    if (isGroupMarker(data, pos)) {
      if (batch.length > 0) return damaged('a batch cut off by the next group', batchStart);
      pos += GROUP_MARKER.length;
      batchStart = pos;
      continue;
    }
    const check = checkFrame(data, pos);
    if (!check.ok) return damaged(check.reason, pos);
    let record: LogRecord;
    try {
      record = decodeFrame(data, pos);
    } catch (e) {
      return damaged(`undecodable record: ${(e as Error).message}`, pos);
    }
    batch.push({ record, offset: pos, length: check.size });
    pos += check.size;
    if (frameFlags(data, pos - check.size) & FLAG_END) {
      onBatch(batch);
      batch = [];
      batchStart = pos;
      if (pos >= until) return { end: pos };
    }
  }
  if (batch.length > 0) return damaged('a batch without its end record', batchStart);
  return { end: pos };
}

/**
 * Damage in the last segment is a torn tail only if it lies within the groups that may have
 * been in flight when the process stopped (`inflight`: the log starts at most that many group
 * writes at once, and acknowledges them in order). Damage with more complete groups after it
 * was acknowledged data: corruption, which is never cut.
 */
export function isTornTail(damage: Damage, inflight: number): boolean {
  return damage.groupsAfter < inflight;
}

/** Where, after damage at `offset`, the next batch surely starts: the next group marker. */
export function nextGroupStart(data: Buffer, offset: number): number {
  return data.indexOf(GROUP_MARKER, offset + 1);
}

/**
 * In a rewritten (compacted or repaired) segment every record is a whole batch of its own and
 * there are no markers: the next batch starts at the next frame that checks out and decodes.
 */
export function nextValidFrame(data: Buffer, offset: number): number {
  for (let p = offset + 1; p + 8 <= data.length; p++) {
    const c = checkFrame(data, p);
    if (!c.ok) continue;
    try {
      decodeFrame(data, p);
      if (frameFlags(data, p) & FLAG_END) return p;
    } catch {
      // not a record
    }
  }
  return -1;
}
