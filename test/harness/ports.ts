/**
 * Loopback ports for test servers (etcd members, nodes on fixed layouts), shared by every harness:
 * outside the kernel's ephemeral range (so nothing that binds port 0 or dials out can take one while
 * its server is down), reserved across processes with a file per port (the holder's pid; a dead
 * holder's files are taken over), and checked free by binding.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const PORTS_DIR = path.join(os.tmpdir(), 'loam-etcd', 'ports');

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}


export function readOr(file: string, fallback: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
}

function mtimeOr(file: string, fallback: number): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return fallback;
  }
}

/**
 * Creates `file` exclusively with our pid in it. False if a live process holds it; the file of a dead
 * holder is taken over (renamed away first, so that two takers cannot both remove and recreate it).
 */
export function tryExclusiveFile(file: string): boolean {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const content = readOr(file, '');
    const owner = Number(content);
    // An empty file is being written right now (or its writer died at that instant: stale after 10 s).
    if (!owner && Date.now() - mtimeOr(file, Date.now()) < 10_000) return false;
    if (owner && pidAlive(owner)) return false;
    const grave = `${file}.stale-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      fs.renameSync(file, grave);
    } catch {
      return false; // someone else took it over first
    }
    if (readOr(grave, '') !== content) {
      // It changed hands between our read and our rename: give it back and let its new holder keep it.
      try {
        fs.linkSync(grave, file);
      } catch {
        /* a third process holds it now */
      }
      fs.rmSync(grave, { force: true });
      return false;
    }
    fs.rmSync(grave, { force: true });
  }
  return false;
}


function candidateRange(): [number, number] {
  const [lo = 32768, hi = 60999] = readOr('/proc/sys/net/ipv4/ip_local_port_range', '32768 60999').trim().split(/\s+/).map(Number);
  if (lo - 1 > 12_000) return [10_000, lo - 1];
  if (hi + 1 < 62_000) return [hi + 1, 65_000];
  return [10_000, 65_000]; // odd kernel settings: rely on the reservation files and bind checks alone
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

export async function reservePorts(n: number): Promise<number[]> {
  const [lo, hi] = candidateRange();
  const got: number[] = [];
  for (let tries = 0; got.length < n; tries++) {
    if (tries > 2000) {
      releasePorts(got);
      throw new Error(`could not find ${n} free loopback ports in ${lo}-${hi}`);
    }
    const port = lo + Math.floor(Math.random() * (hi - lo + 1));
    if (port === 2379 || port === 2380 || got.includes(port)) continue;
    const file = path.join(PORTS_DIR, String(port));
    if (!tryExclusiveFile(file)) continue;
    if (await canBind(port)) got.push(port);
    else fs.rmSync(file, { force: true });
  }
  return got;
}

export function releasePorts(ports: number[]): void {
  for (const p of ports) {
    const f = path.join(PORTS_DIR, String(p));
    if (readOr(f, '') === String(process.pid)) fs.rmSync(f, { force: true });
  }
}

//

/**
 * `count` consecutive reserved ports, for tests of fixed port layouts (where port 0 cannot stand
 * in); release them with `releasePorts` once the server listens or has stopped.
 */
export async function reservePortBlock(count: number): Promise<number> {
  const [lo, hi] = candidateRange();
  for (let tries = 0; tries < 500; tries++) {
    const base = lo + Math.floor(Math.random() * (hi - lo - count));
    const got: number[] = [];
    for (let p = base; p < base + count; p++) {
      if (p === 2379 || p === 2380 || !tryExclusiveFile(path.join(PORTS_DIR, String(p))) || !(await canBind(p))) break;
      got.push(p);
    }
    if (got.length === count) return base;
    for (const p of got) fs.rmSync(path.join(PORTS_DIR, String(p)), { force: true });
  }
  throw new Error(`could not find ${count} consecutive free loopback ports in ${lo}-${hi}`);
}
