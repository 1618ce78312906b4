// persist-10k: one client.persist(root) that creates 10,000 new small objects in one batch,
// against a real node child process. Target: >= 50,000 objects/s. For scale the line also
// gives the floor of the same batch: a bare gRPC call carrying the same request and reply bytes
// to the echo child, plus an append + fdatasync of the same log bytes.
import { connect } from '@loam/sdk';
import {
  BenchBatch, BenchPerson, startNode, startEcho, echoClient, replyRequest, writeFsyncMs, logBytes,
  tempDir, now, median, gc, settle, fmt, ratio, bytes, verdict, note, commitWireSizes,
} from './lib.mjs';

export const name = 'persist-10k';
const N = 10_000;
const TARGET = 50_000; // objects/s
const WARMUP = 2;
const ROUNDS = 7;

let serial = 0;
function makeRoot() {
  const items = new Array(N);
  for (let i = 0; i < N; i++) items[i] = new BenchPerson(serial++);
  return new BenchBatch(items);
}

export async function run() {
  const node = await startNode();
  const client = await connect(node.url);
  try {
    // Sizes of the batch on the wire and on disk, taken from one warm-up persist.
    let before = logBytes(node.dataDir);
    const { reqBytes, resBytes } = await commitWireSizes(client, () => client.persist(makeRoot()));
    const diskBytes = logBytes(node.dataDir) - before;

    for (let r = 1; r < WARMUP; r++) await client.persist(makeRoot());
    const times = [];
    for (let r = 0; r < ROUNDS; r++) {
      const root = makeRoot();
      gc();
      await settle(50);
      const t0 = now();
      await client.persist(root);
      times.push(now() - t0);
      if (root.items[N - 1].$oid === undefined) throw new Error('persist did not assign oids');
    }
    const ms = median(times);
    const rate = (N * 1000) / ms;
    note(`persist rounds ms: ${times.map(fmt).join(' ')}`);

    // The floor: the same bytes through bare gRPC, then written and fdatasynced.
    const echo = await startEcho();
    const ec = await echoClient(echo.address);
    const probe = replyRequest(reqBytes, resBytes);
    for (let i = 0; i < 3; i++) await ec.reply(probe);
    const rpcTimes = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t0 = now();
      await ec.reply(probe);
      rpcTimes.push(now() - t0);
    }
    const rpcMs = median(rpcTimes);
    const fsyncMs = await writeFsyncMs(tempDir('loam-bench-fsync-'), diskBytes, ROUNDS);
    const floorMs = rpcMs + fsyncMs;
    const floorRate = (N * 1000) / floorMs;
    ec.close();
    await echo.stop();

    return (
      `${name}: ${fmt(rate)} obj/s = ${ratio(rate / TARGET)} target ${TARGET} obj/s (${verdict(rate >= TARGET)})` +
      ` | median ${fmt(ms)} ms per batch of ${N} (+1 root), ${bytes(reqBytes)} request, ${bytes(diskBytes)} logged;` +
      ` baseline floor ${fmt(floorMs)} ms = bare gRPC same bytes ${fmt(rpcMs)} ms + write+fdatasync ${fmt(fsyncMs)} ms` +
      ` (${fmt(floorRate)} obj/s; persist at ${ratio(rate / floorRate)} of it)`
    );
  } finally {
    await client.close();
    await node.stop();
  }
}
