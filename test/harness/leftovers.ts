/**
 * What a harness leaves if its vitest worker dies without cleaning up (killed, crashed): every
 * harness that starts processes writes a record per live group of them (its owner's pid, its
 * temp dir, the pids, the reserved ports), and the next start in any worker reaps the records
 * of dead owners. A last-resort exit hook kills a worker's children when it exits normally
 * without its harness's cleanup.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PORTS_DIR, pidAlive, readOr } from './ports.js';

export interface LeftoverRecord {
  owner: number;
  dir: string;
  pids: number[];
  ports: number[];
}

export function writeLeftoverRecord(file: string, rec: Omit<LeftoverRecord, 'owner'>): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify({ owner: process.pid, ...rec }));
}

/** Kills the processes, removes the dirs and frees the ports of every record in `registry` whose owner is gone. */
export function reapDeadOwners(registry: string): void {
  let files: string[];
  try {
    files = fs.readdirSync(registry);
  } catch {
    return;
  }
  for (const name of files) {
    const file = path.join(registry, name);
    let rec: LeftoverRecord;
    try {
      rec = JSON.parse(fs.readFileSync(file, 'utf8')) as LeftoverRecord;
    } catch {
      continue;
    }
    if (pidAlive(rec.owner)) continue;
    for (const pid of rec.pids ?? []) {
      // Only a pid that is still one of ours (pids get reused): each command line names the dir.
      if (readOr(`/proc/${pid}/cmdline`, '').includes(rec.dir)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    fs.rmSync(rec.dir, { recursive: true, force: true });
    for (const p of rec.ports ?? []) {
      const pf = path.join(PORTS_DIR, String(p));
      if (readOr(pf, '') === String(rec.owner)) fs.rmSync(pf, { force: true });
    }
    fs.rmSync(file, { force: true });
  }
}

/** Child processes that must not outlive this worker: SIGKILLed at exit if still running. */
export class Children extends Set<ChildProcess> {
  private hooked = false;

  override add(child: ChildProcess): this {
    if (!this.hooked) {
      this.hooked = true;
      process.once('exit', () => {
        for (const c of this) {
          try {
            c.kill('SIGKILL');
          } catch {
            /* gone */
          }
        }
      });
    }
    return super.add(child);
  }
}
