import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

/**
 * The file operations the local segment log needs, and nothing more, so tests can put a
 * fault-injecting layer (FaultyFiles) under the log instead of filling a real disk.
 *
 * Contract (what is durable when each call returns):
 * - `create(name)`: an empty file exists, and its directory entry is durable.
 * - `AppendFile.writeAt(bufs, pos)`: every byte of `bufs`, in order, is durable from `pos`
 *   (O_DSYNC; one gathered write, so a group costs no copy); on a rejection any prefix of them
 *   may have reached the file.
 * - `truncate(name, size)`: the file is `size` bytes long, durably.
 * - `replace(name, buf)`: `name` holds exactly `buf`, durably; a crash leaves either the old
 *   file (or none) or the new one whole, never a mix (written aside, fsynced, renamed).
 * - `remove(name)`: the file is gone, durably.
 * - Reads (`readWhole`, `ReadFile.read`) see every byte of every write that returned.
 */
export interface SegmentFiles {
  readonly dir: string;
  list(): string[];
  readWhole(name: string): Promise<Buffer>;
  create(name: string): Promise<void>;
  openAppend(name: string): Promise<AppendFile>;
  openRead(name: string): ReadFile;
  truncate(name: string, size: number): Promise<void>;
  replace(name: string, buf: Buffer): Promise<void>;
  remove(name: string): Promise<void>;
}

export interface AppendFile {
  writeAt(bufs: readonly Buffer[], pos: number): Promise<void>;
  close(): Promise<void>;
}

export interface ReadFile {
  /** Reads exactly `length` bytes at `offset` (a short file is an error). */
  read(offset: number, length: number): Buffer;
  close(): void;
}

/** `bufs` without their first `n` bytes. */
function skipBytes(bufs: readonly Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (n >= b.length) {
      n -= b.length;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}

/** Read-write, every write durable (data and the metadata needed to read it) when it returns. */
const DSYNC_RW = fs.constants.O_RDWR | fs.constants.O_DSYNC;

/** Segment files on the local file system. */
export class LocalFiles implements SegmentFiles {
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  private file(name: string): string {
    return path.join(this.dir, name);
  }

  list(): string[] {
    return fs.readdirSync(this.dir);
  }

  /** One read into a buffer of the file's size (readFile reads 512 KiB a turn: slow for 64 MiB). */
  async readWhole(name: string): Promise<Buffer> {
    const fh = await fsp.open(this.file(name), 'r');
    try {
      const { size } = await fh.stat();
      const buf = Buffer.allocUnsafe(size);
      let off = 0;
      while (off < size) {
        const { bytesRead } = await fh.read(buf, off, size - off, off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return off === size ? buf : buf.subarray(0, off);
    } finally {
      await fh.close();
    }
  }

  async create(name: string): Promise<void> {
    const h = await fsp.open(this.file(name), 'wx+');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
    this.syncDir();
  }

  async openAppend(name: string): Promise<AppendFile> {
    const h = await fsp.open(this.file(name), DSYNC_RW);
    return {
      // One thread-pool trip: with O_DSYNC the write returns once it is durable.
      async writeAt(bufs: readonly Buffer[], pos: number): Promise<void> {
        let rest = bufs.filter((b) => b.length > 0);
        let at = pos;
        while (rest.length > 0) {
          const { bytesWritten } = await h.writev(rest, at);
          at += bytesWritten;
          rest = skipBytes(rest, bytesWritten); // a short write goes on where it stopped
        }
      },
      close: () => h.close(),
    };
  }

  openRead(name: string): ReadFile {
    const fd = fs.openSync(this.file(name), 'r');
    return {
      // Synchronous: a page-cache hit costs microseconds, less than a thread-pool hop.
      read(offset: number, length: number): Buffer {
        const buf = Buffer.allocUnsafe(length);
        let got = 0;
        while (got < length) {
          const n = fs.readSync(fd, buf, got, length - got, offset + got);
          if (n === 0) throw new Error(`short read of ${name} at ${offset + got}`);
          got += n;
        }
        return buf;
      },
      close: () => fs.closeSync(fd),
    };
  }

  async truncate(name: string, size: number): Promise<void> {
    const h = await fsp.open(this.file(name), 'r+');
    try {
      await h.truncate(size);
      await h.sync();
    } finally {
      await h.close();
    }
  }

  async replace(name: string, buf: Buffer): Promise<void> {
    const tmp = this.file(`${name}.tmp`);
    const h = await fsp.open(tmp, 'w');
    try {
      let done = 0;
      while (done < buf.length) done += (await h.write(buf, done, buf.length - done, done)).bytesWritten;
      await h.sync();
    } finally {
      await h.close();
    }
    await fsp.rename(tmp, this.file(name));
    this.syncDir();
  }

  async remove(name: string): Promise<void> {
    await fsp.rm(this.file(name), { force: true });
    this.syncDir();
  }

  private syncDir(): void {
    const fd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}
