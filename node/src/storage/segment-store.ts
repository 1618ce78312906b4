/**
 * Where the engine's log segments live: local disk today (SegmentLog), and S3 behind a local
 * cache next. The engine talks to segments only through this interface.
 *
 * Contract:
 * - A segment is named by a handle (a number). Segments have a log order (`segments()` lists
 *   handles in it); a new segment always comes last. Replay reads segments in log order and
 *   each from its start. Index entries hold handles.
 * - `append(batch)` resolves once the whole batch is durable: a crash after that never loses
 *   it. Batches become durable, and resolve, in the order `append` was called; a batch never
 *   spans two segments. A batch whose append rejected may or may not be there after a crash,
 *   but is never there in part (replay applies whole batches only).
 * - Only the active segment (the last) takes appends. Every other segment is sealed: it
 *   changes only through `rewrite` and `remove`.
 * - `read(segment, offset, length)` returns bytes of a resolved append (async: the bytes may
 *   have to be fetched). `readSegment` returns a whole sealed segment.
 * - `rewrite(segment, content)` makes `content` durable as the new content of a sealed
 *   segment, at the same place in log order, and returns the handle of the new content; a crash
 *   leaves the old content or the new, whole. Both handles stay readable until `retire(old)`,
 *   so the caller can repoint its index from one to the other a piece at a time.
 * - `remove(segment)` deletes a sealed segment, durably.
 * - `blocked` says why appends are refused right now; `probe()` tries to clear a refusal that
 *   may pass (a full disk) and resolves true when appends work again.
 * - `close()` waits for appends already queued, then releases everything.
 */
export interface SegmentStore {
  append(batch: Buffer): Promise<{ segment: number; offset: number }>;
  readonly activeSegment: number;
  segments(): number[];
  segmentSize(segment: number): number;
  readonly totalBytes: number;
  /** `check`: whether fetched bytes are right (a record's checksum); wrong ones are fetched again. */
  read(segment: number, offset: number, length: number, check?: (buf: Buffer) => boolean): Promise<Buffer>;
  readSegment(segment: number): Promise<Buffer>;
  rewrite(segment: number, content: Buffer): Promise<number>;
  retire(segment: number): Promise<void>;
  remove(segment: number): Promise<void>;
  /**
   * Whether some segment before this one may still be replayed (locally, or by a restore from
   * S3): while one may, a removal must be kept. Without it: whether one is in `segments()` before.
   */
  hasOlder?(segment: number): boolean;
  readonly blocked: WriteBlock | undefined;
  probe(): Promise<boolean>;
  close(): Promise<void>;
}

export interface WriteBlock {
  /** An errno code (ENOSPC, EIO) or a short word. */
  reason: string;
  message: string;
  /** True when the refusal can pass without a restart (space freed). */
  recoverable: boolean;
}

export interface RecoveryReport {
  segments: number;
  records: number;
  bytes: number;
  /** Bytes cut from the tail of the last segment (a torn tail). */
  truncatedBytes: number;
  truncatedReason?: string;
  /** Segments an index checkpoint covered (opened without being read). */
  checkpointSegments?: number;
}

/** The log is damaged in a way that is not a torn tail: the node must not start on it. */
export class CorruptLogError extends Error {
  constructor(message: string, readonly file: string, readonly offset: number) {
    super(message);
  }
}
