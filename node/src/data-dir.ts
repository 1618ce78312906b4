import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '@loam/sdk/wire';

/** What makes a node the same node across restarts: kept in DIR/node.json. */
export interface NodeIdentity {
  id: string;
  number: number;
  createdAt: string;
}

/**
 * Takes the data directory for this process: a second node on the same directory would
 * interleave two logs into one, so it is refused. A lock left by a killed process (its pid is
 * gone) is taken over.
 */
export function lockDataDir(dir: string): () => void {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'LOCK');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => fs.rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(fs.readFileSync(file, 'utf8'));
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new InvalidArgumentError(`data directory ${dir} is in use by process ${pid}`);
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new InvalidArgumentError(`could not lock data directory ${dir}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The identity in DIR/node.json, or undefined on a first start. */
export function readIdentity(dir: string): NodeIdentity | undefined {
  const file = path.join(dir, 'node.json');
  if (!fs.existsSync(file)) return undefined;
  const id = JSON.parse(fs.readFileSync(file, 'utf8')) as NodeIdentity;
  if (typeof id.id !== 'string' || !Number.isInteger(id.number)) throw new Error(`${file} is malformed`);
  return id;
}

/** Writes node.json atomically and durably (a crash leaves the old file or the new one). */
export function writeIdentity(dir: string, identity: NodeIdentity): void {
  writeDurably(dir, 'node.json', JSON.stringify(identity, null, 2) + '\n');
}

/**
 * DIR/drained.json: this node was drained (it takes no new objects, its home directory is served
 * by `homeSuccessor`). Kept in the data directory so that a restart comes back drained before it
 * has any view of the cluster, even while etcd is down.
 */
export interface DrainedRecord {
  drainedAt: string;
  homeSuccessor?: number;
}
const DRAINED_FILE = 'drained.json';

export function readDrained(dir: string): DrainedRecord | undefined {
  const file = path.join(dir, DRAINED_FILE);
  if (!fs.existsSync(file)) return undefined;
  const rec = JSON.parse(fs.readFileSync(file, 'utf8')) as DrainedRecord;
  if (typeof rec.drainedAt !== 'string') throw new Error(`${file} is malformed`);
  return rec;
}

export function writeDrained(dir: string, rec: DrainedRecord): void {
  writeDurably(dir, DRAINED_FILE, JSON.stringify(rec) + '\n');
}

/** Removes DIR/drained.json durably (a cancelled drain made the node ready again). */
export function clearDrained(dir: string): void {
  const file = path.join(dir, DRAINED_FILE);
  if (!fs.existsSync(file)) return;
  fs.rmSync(file);
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

/** Writes DIR/NAME through a temporary file, fsynced, renamed, the directory fsynced. */
function writeDurably(dir: string, name: string, content: string): void {
  const file = path.join(dir, name);
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
