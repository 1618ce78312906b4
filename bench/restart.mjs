// restart-1m: a data dir holding 1,000,000 small objects (filled in-process through the engine,
// 10,000 writes per commit, ~200-byte states). Measures:
//  - ready: spawn of a node child process on that dir until its `ready` log line (printed after
//    log recovery), median of a few starts. Target < 10 s. Baseline: a raw sequential read of
//    the same segment files (fs.readFileSync each), also measured here, page cache equally warm.
//  - index memory: engine.stats().indexBytes / objects, target < 150 B/object; plus the heap
//    growth (heapUsed + arrayBuffers, after a full GC) of Engine.open in a fresh process.
// Run as `node --expose-gc bench/restart.mjs --open DIR` it is that fresh process (prints JSON).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Engine } from '../node/dist/storage/engine.js';
import { newOid } from '../sdk/dist/oid.js';
import { tempDir, startNode, runChildJson, now, median, gc, fmt, ratio, bytes, verdict, note } from './lib.mjs';

export const name = 'restart-1m';
export const OBJECTS = 1_000_000;
const PER_COMMIT = 10_000;
const STATE_BYTES = 200;
const READY_TARGET_S = 10;
const INDEX_TARGET = 150; // bytes per object, at most
const STARTS = 3;

/** Fills `dir` with OBJECTS objects through the engine (also used by s3-restore.mjs); returns engine.stats(). */
export async function fill(dir) {
  const engine = await Engine.open({ dir, compactionIntervalMs: 0, cacheBytes: 1024 * 1024 });
  try {
    const state = Buffer.alloc(STATE_BYTES, 0x61);
    for (let done = 0; done < OBJECTS; done += PER_COMMIT) {
      const writes = new Array(PER_COMMIT);
      for (let i = 0; i < PER_COMMIT; i++) {
        // Vary the state a little so records are not all byte-identical.
        const s = Buffer.from(state);
        s.writeUInt32LE(done + i, 0);
        writes[i] = { oid: newOid(1), className: 'BenchPerson', state: s, expectedVersion: 0 };
      }
      await engine.commit({ dataset: 'default', writes });
    }
    const s = engine.stats();
    if (s.objects !== OBJECTS) throw new Error(`filled ${s.objects} objects, expected ${OBJECTS}`);
    return s;
  } finally {
    await engine.close();
  }
}

function segmentFiles(dir) {
  const log = path.join(dir, 'log');
  return fs.readdirSync(log).filter((f) => f.endsWith('.seg')).sort().map((f) => path.join(log, f));
}

function rawReadMs(files) {
  const t0 = now();
  let n = 0;
  for (const f of files) n += fs.readFileSync(f).length;
  const ms = now() - t0;
  if (n === 0) throw new Error('no log bytes');
  return ms;
}

/** In the fresh child: open the engine, report time and memory growth. */
async function measureOpen(dir) {
  const mem = () => {
    globalThis.gc();
    globalThis.gc();
    const m = process.memoryUsage();
    return { heap: m.heapUsed + m.arrayBuffers, rss: m.rss };
  };
  const m0 = mem();
  const t0 = now();
  const engine = await Engine.open({ dir, compactionIntervalMs: 0 });
  const openMs = now() - t0;
  const m1 = mem();
  const s = engine.stats();
  await engine.close();
  process.stdout.write(JSON.stringify({ openMs, objects: s.objects, indexBytes: s.indexBytes, heapBytes: m1.heap - m0.heap, rssBytes: m1.rss - m0.rss }) + '\n');
}

export async function run() {
  const dir = tempDir('loam-bench-restart-');
  const t0 = now();
  const filled = await fill(dir);
  const fillS = (now() - t0) / 1000;
  const files = segmentFiles(dir);
  note(`filled ${filled.objects} objects, ${bytes(filled.diskBytes)} in ${files.length} segments, in ${fmt(fillS)} s`);

  rawReadMs(files); // warm the page cache the same way for everyone
  gc();
  const raw = [];
  for (let i = 0; i < 3; i++) raw.push(rawReadMs(files));
  gc();
  const rawMs = median(raw);

  const ready = [];
  const recovered = [];
  for (let i = 0; i < STARTS; i++) {
    const node = await startNode({ dataDir: dir, timeoutMs: 120_000 });
    ready.push(node.readyMs);
    const rec = node.logs.find((l) => l.msg === 'recovered log');
    if (rec) recovered.push(Number(rec.ms));
    if (rec && Number(rec.objects) !== OBJECTS) throw new Error(`node recovered ${rec.objects} objects, expected ${OBJECTS}`);
    await node.stop();
  }
  const readyS = median(ready) / 1000;
  note(`ready ms: ${ready.map(fmt).join(' ')}; recovery ms: ${recovered.map(fmt).join(' ')}; raw read ms: ${raw.map(fmt).join(' ')}`);

  const open = await runChildJson(['--expose-gc', fileURLToPath(import.meta.url), '--open', dir], { timeoutMs: 120_000 });
  if (open.objects !== OBJECTS) throw new Error(`fresh open found ${open.objects} objects, expected ${OBJECTS}`);
  const indexPer = open.indexBytes / open.objects;
  const heapPer = open.heapBytes / open.objects;
  const readyOk = readyS < READY_TARGET_S;
  const indexOk = indexPer < INDEX_TARGET;
  return (
    `${name}: ready ${fmt(readyS)} s = ${ratio(readyS / READY_TARGET_S)} target < ${READY_TARGET_S} s (${verdict(readyOk)}), ` +
    `${ratio((readyS * 1000) / rawMs)} raw read of the ${bytes(filled.diskBytes)} log ${fmt(rawMs / 1000)} s; ` +
    `index ${fmt(indexPer)} B/obj = ${ratio(indexPer / INDEX_TARGET)} target < ${INDEX_TARGET} B/obj (${verdict(indexOk)}), heap growth ${fmt(heapPer)} B/obj` +
    ` | ${OBJECTS} objects in ${files.length} segments; median of ${STARTS} starts (spawn to ready line),` +
    ` recovery inside node ${fmt(median(recovered) / 1000)} s, Engine.open in a fresh process ${fmt(open.openMs / 1000)} s; fill took ${fmt(fillS)} s`
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href && process.argv[2] === '--open') {
  await measureOpen(process.argv[3]);
}
