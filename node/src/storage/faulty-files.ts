import type { AppendFile, ReadFile, SegmentFiles } from './segment-files.js';

/**
 * A SegmentFiles that fails on purpose, for tests (as SlateDB tests against a failing object
 * store): ENOSPC, EIO, short (torn) writes and failed syncs at chosen calls, and a simulated
 * crash at a chosen byte of the write stream, after which every call fails as if the process
 * were gone. With O_DSYNC a failed sync shows up as a failed write, so `op: 'write'` covers it.
 */
export type FaultOp = 'write' | 'create' | 'truncate' | 'replace' | 'remove' | 'read' | 'readWhole';

export interface Fault {
  op: FaultOp;
  /** The errno code the call fails with, e.g. 'ENOSPC' or 'EIO'. */
  code: string;
  /** Matching calls to let through before failing (default 0). */
  after?: number;
  /** How many matching calls fail (default: every one until cleared). */
  times?: number;
  /** Writes only: this many bytes of the buffer reach the file before the failure. */
  partialBytes?: number;
  /** Only files whose name matches. */
  file?: RegExp;
}

interface ArmedFault extends Fault {
  seen: number;
  failed: number;
}

export class FaultyFiles implements SegmentFiles {
  private faults: ArmedFault[] = [];
  private crashAt?: number;
  private written = 0;
  /** True once the simulated crash happened: every call fails from then on. */
  dead = false;
  /** Calls by op, including failed ones. */
  readonly calls: Record<FaultOp, number> = { write: 0, create: 0, truncate: 0, replace: 0, remove: 0, read: 0, readWhole: 0 };

  constructor(private readonly inner: SegmentFiles) {}

  get dir(): string {
    return this.inner.dir;
  }

  inject(f: Fault): void {
    this.faults.push({ ...f, seen: 0, failed: 0 });
  }

  clear(): void {
    this.faults = [];
  }

  /** The process "dies" at byte `n` of all bytes written from now on: that write is cut there. */
  crashAtByte(n: number): void {
    this.crashAt = this.written + n;
  }

  /** Bytes handed to writeAt so far (what a crash point is counted in). */
  get bytesWritten(): number {
    return this.written;
  }

  private check(op: FaultOp, name: string): ArmedFault | undefined {
    this.calls[op]++;
    if (this.dead) throw errno('EIO', `${op} ${name}: the process crashed (simulated)`);
    for (const f of this.faults) {
      if (f.op !== op || (f.file && !f.file.test(name))) continue;
      if (f.seen++ < (f.after ?? 0)) continue;
      if (f.failed >= (f.times ?? Infinity)) continue;
      f.failed++;
      return f;
    }
    return undefined;
  }

  list(): string[] {
    if (this.dead) throw errno('EIO', 'list: the process crashed (simulated)');
    return this.inner.list();
  }

  async readWhole(name: string): Promise<Buffer> {
    const f = this.check('readWhole', name);
    if (f) throw errno(f.code, `read ${name}`);
    return this.inner.readWhole(name);
  }

  async create(name: string): Promise<void> {
    const f = this.check('create', name);
    if (f) throw errno(f.code, `create ${name}`);
    return this.inner.create(name);
  }

  async openAppend(name: string): Promise<AppendFile> {
    const file = await this.inner.openAppend(name);
    return {
      writeAt: async (bufs, pos) => {
        const total = bufs.reduce((n, b) => n + b.length, 0);
        const f = this.check('write', name);
        if (f) {
          const part = Math.min(total, f.partialBytes ?? 0);
          if (part > 0) await file.writeAt([Buffer.concat(bufs).subarray(0, part)], pos);
          throw errno(f.code, `write ${name}`);
        }
        if (this.crashAt !== undefined && this.written + total > this.crashAt) {
          const part = this.crashAt - this.written;
          if (part > 0) await file.writeAt([Buffer.concat(bufs).subarray(0, part)], pos);
          this.written = this.crashAt;
          this.dead = true;
          throw errno('EIO', `write ${name}: the process crashed (simulated)`);
        }
        this.written += total;
        return file.writeAt(bufs, pos);
      },
      close: () => file.close(),
    };
  }

  openRead(name: string): ReadFile {
    const file = this.inner.openRead(name);
    return {
      read: (offset, length) => {
        const f = this.check('read', name);
        if (f) throw errno(f.code, `read ${name}`);
        return file.read(offset, length);
      },
      close: () => file.close(),
    };
  }

  async truncate(name: string, size: number): Promise<void> {
    const f = this.check('truncate', name);
    if (f) throw errno(f.code, `truncate ${name}`);
    return this.inner.truncate(name, size);
  }

  async replace(name: string, buf: Buffer): Promise<void> {
    const f = this.check('replace', name);
    if (f) throw errno(f.code, `replace ${name}`);
    return this.inner.replace(name, buf);
  }

  async remove(name: string): Promise<void> {
    const f = this.check('remove', name);
    if (f) throw errno(f.code, `remove ${name}`);
    return this.inner.remove(name);
  }
}

function errno(code: string, what: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: ${what} (injected)`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}
