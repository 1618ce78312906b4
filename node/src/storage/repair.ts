import fs from 'node:fs';
import path from 'node:path';
import { LocalFiles } from './segment-files.js';
import { nextGroupStart, nextValidFrame, scanBatches } from './log-scan.js';
import { parseSegmentName, segmentName } from './segment-log.js';

/**
 * `loam repair`: for a log that recovery refused (corruption, never cut), finds every intact
 * batch of every segment. A batch applies whole or not at all, so a batch touched by the damage
 * is dropped and every other one is kept. With `apply`, each damaged segment is replaced by its
 * intact batches (as a new revision of the segment) after the original was copied to
 * `log/damaged/`: nothing is ever deleted without a copy.
 */
export interface SegmentRepair {
  file: string;
  bytes: number;
  batches: number;
  records: number;
  /** Damaged ranges skipped: [start, end) with why. */
  damaged: { start: number; end: number; reason: string }[];
  /** Bytes kept (the segment's new size after apply). */
  keptBytes: number;
}

export interface RepairReport {
  dir: string;
  segments: SegmentRepair[];
  damagedSegments: number;
  /** Set by apply: where each damaged original was copied. */
  movedAside: string[];
}

export async function planRepair(dataDir: string): Promise<{ report: RepairReport; contents: Map<string, Buffer> }> {
  const logDir = path.join(dataDir, 'log');
  if (!fs.existsSync(logDir)) throw new Error(`${dataDir} has no log directory: is it a Loam data directory?`);
  const files = new LocalFiles(logDir);
  const current = new Map<number, string>();
  for (const f of files.list()) {
    const p = parseSegmentName(f);
    if (!p) continue;
    const cur = current.get(p.id);
    if (!cur || parseSegmentName(cur)!.rev < p.rev) current.set(p.id, f);
  }
  const report: RepairReport = { dir: dataDir, segments: [], damagedSegments: 0, movedAside: [] };
  const contents = new Map<string, Buffer>();
  for (const id of [...current.keys()].sort((a, b) => a - b)) {
    const name = current.get(id)!;
    const rewritten = parseSegmentName(name)!.rev > 0;
    const data = await files.readWhole(name);
    const seg: SegmentRepair = { file: name, bytes: data.length, batches: 0, records: 0, damaged: [], keptBytes: 0 };
    const kept: Buffer[] = [];
    let from = 0;
    while (from < data.length) {
      const { end, damage } = scanBatches(data, (batch) => {
        const first = batch[0].offset;
        const last = batch[batch.length - 1];
        kept.push(data.subarray(first, last.offset + last.length));
        seg.batches++;
        seg.records += batch.length;
      }, from);
      if (!damage) break;
      // Resume where a batch surely starts: the next group (appended segments) or the next
      // whole record (rewritten segments, where each record is a batch of its own).
      const next = rewritten ? nextValidFrame(data, damage.offset) : nextGroupStart(data, damage.offset);
      const stop = next < 0 ? data.length : next;
      seg.damaged.push({ start: damage.goodEnd, end: stop, reason: damage.reason });
      from = stop;
      void end;
    }
    seg.keptBytes = kept.reduce((n, b) => n + b.length, 0);
    if (seg.damaged.length > 0) {
      report.damagedSegments++;
      contents.set(name, Buffer.concat(kept));
    }
    report.segments.push(seg);
  }
  return { report, contents };
}

export async function applyRepair(dataDir: string): Promise<RepairReport> {
  const { report, contents } = await planRepair(dataDir);
  const logDir = path.join(dataDir, 'log');
  const files = new LocalFiles(logDir);
  const aside = path.join(logDir, 'damaged');
  fs.mkdirSync(aside, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  for (const [name, content] of contents) {
    // 1. A durable copy of the original, outside the log. 2. The intact batches as the
    // segment's next revision (the log opens the highest). 3. Only then the original goes.
    const copy = path.join(aside, `${name}.${stamp}`);
    fs.copyFileSync(path.join(logDir, name), copy);
    const fd = fs.openSync(copy, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    const p = parseSegmentName(name)!;
    await files.replace(segmentName(p.id, p.rev + 1), content);
    await files.remove(name);
    report.movedAside.push(copy);
  }
  return report;
}

export function formatRepair(r: RepairReport, applied: boolean): string {
  const lines: string[] = [];
  for (const s of r.segments) {
    if (s.damaged.length === 0) continue;
    const lost = s.damaged.reduce((n, d) => n + (d.end - d.start), 0);
    lines.push(`${s.file}: ${s.bytes} bytes; keeps ${s.batches} intact batches (${s.records} records, ${s.keptBytes} bytes); drops ${lost} bytes:`);
    for (const d of s.damaged) lines.push(`  bytes ${d.start}-${d.end}: ${d.reason}`);
  }
  if (r.damagedSegments === 0) lines.push(`${r.dir}: ${r.segments.length} segments, no damage found; nothing to repair`);
  else if (applied) lines.push(`repaired ${r.damagedSegments} segment(s); originals copied to: ${r.movedAside.join(', ')}`);
  else lines.push(`${r.damagedSegments} damaged segment(s); run again with --apply to keep the intact batches (originals are copied aside, never deleted)`);
  return lines.join('\n');
}
