// get-seq: sequential client.get(oid) of one small object against a node child process, vs the
// round trip of a bare gRPC call to the echo child with the same request and reply sizes.
// Target: get latency <= 1.5x the bare round trip. Both are measured in interleaved rounds so
// drift of a noisy machine hits them alike; the figure is the mean over all calls.
import { connect } from '@loam/sdk';
import { GetRequest, GetResponse } from '@loam/sdk/wire';
import { BenchPerson, startNode, startEcho, echoClient, replyRequest, now, gc, settle, fmt, ratio, verdict, note } from './lib.mjs';

export const name = 'get-seq';
const TARGET = 1.5; // get / echo, at most
const WARMUP = 2000;
const ROUNDS = 7;
const PER_ROUND = 1000;

export async function run() {
  const node = await startNode();
  const echo = await startEcho();
  const client = await connect(node.url);
  const ec = await echoClient(echo.address);
  try {
    const obj = await client.persist(new BenchPerson(1));
    const oid = obj.$oid;
    // The exact wire sizes of a get, for the baseline call.
    const req = { dataset: client.dataset, oids: [oid] };
    const res = await client.conn.get(req); // internal: only to measure the reply size
    const reqBytes = GetRequest.encode(req).finish().length;
    const resBytes = GetResponse.encode(res).finish().length;
    const probe = replyRequest(reqBytes, resBytes);

    const get = async () => {
      const o = await client.get(oid);
      if (o.age === undefined) throw new Error('get returned no fields');
    };
    const call = () => ec.reply(probe);
    for (let i = 0; i < WARMUP; i++) await get();
    for (let i = 0; i < WARMUP; i++) await call();

    let getMs = 0;
    let echoMs = 0;
    const roundRatios = [];
    for (let r = 0; r < ROUNDS; r++) {
      gc();
      await settle(20);
      let t0 = now();
      let g;
      let e;
      if (r % 2 === 0) {
        for (let i = 0; i < PER_ROUND; i++) await get();
        g = now() - t0;
        t0 = now();
        for (let i = 0; i < PER_ROUND; i++) await call();
        e = now() - t0;
      } else {
        for (let i = 0; i < PER_ROUND; i++) await call();
        e = now() - t0;
        t0 = now();
        for (let i = 0; i < PER_ROUND; i++) await get();
        g = now() - t0;
      }
      getMs += g;
      echoMs += e;
      roundRatios.push(g / e);
    }
    const n = ROUNDS * PER_ROUND;
    const getUs = (getMs / n) * 1000;
    const echoUs = (echoMs / n) * 1000;
    const rt = getUs / echoUs;
    note(`get/echo per round: ${roundRatios.map((x) => x.toFixed(2)).join(' ')}`);
    return (
      `${name}: ${fmt(getUs)} us/get = ${ratio(rt)} bare gRPC round trip ${fmt(echoUs)} us, target <= ${TARGET}x (${verdict(rt <= TARGET)})` +
      ` | mean of ${n} sequential calls each, after ${WARMUP} warm-up; request ${reqBytes} B, reply ${resBytes} B`
    );
  } finally {
    ec.close();
    await client.close();
    await echo.stop();
    await node.stop();
  }
}
