import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';
import { Engine, type EngineOptions } from '../dist/storage/engine.js';

/**
 * Engines on temporary data directories for one test file: each test's engines are closed and
 * its directories removed after it. `defaults` are merged under every open's options.
 */
export function engineFixture(prefix: string, defaults: Partial<EngineOptions> = {}) {
  const dirs: string[] = [];
  const engines: Engine[] = [];
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.close().catch(() => undefined);
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const tmp = (): string => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), `loam-${prefix}-`));
    dirs.push(d);
    return d;
  };
  const open = async (dir: string, opts: Partial<EngineOptions> = {}): Promise<Engine> => {
    const e = await Engine.open({ dir, compactionIntervalMs: 0, ...defaults, ...opts });
    engines.push(e);
    return e;
  };
  /** Closes `e` cleanly and opens its directory again. */
  const restart = async (e: Engine, dir: string, opts: Partial<EngineOptions> = {}): Promise<Engine> => {
    await e.close();
    engines.splice(engines.indexOf(e), 1);
    return open(dir, opts);
  };
  return { tmp, open, restart, engines };
}

/** A write of a 'T' object with `text` as its state. */
export const put = (oid: string, text: string, expectedVersion = 0) => ({ oid, className: 'T', state: Buffer.from(text), expectedVersion });
