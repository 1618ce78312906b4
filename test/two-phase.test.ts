import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel, LoamError, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startClusterNode, waitFor, type NodeProcess } from './harness/node-process.js';

class Account extends Persistent {
  constructor(public balance: number) {
    super();
  }
}
registerModel(Account, 'TwoPhase.Account');

const TX_TIMEOUT = '800'; // a participant asks etcd for the decision after this long
let etcd: EtcdCluster;
const clients: Client[] = [];
let seq = 0;

beforeAll(async () => {
  etcd = await startEtcd({ members: 1 });
});
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
});

/** acknowledged 'either': the crash races the answer, which may or may not have left. */
type Case = { failpoint: string; victim: 0 | 1; role: string; acknowledged: boolean | 'either'; applied: boolean; replicated?: boolean };

/**
 * Node 1 coordinates (it holds the first object written); node 2 is the other participant.
 * The victim node runs with the failpoint armed and kills itself there; it is then restarted.
 */
describe.each<Case>([
  { failpoint: 'coordinator-after-prepare', victim: 0, role: 'coordinator', acknowledged: false, applied: false },
  { failpoint: 'coordinator-after-decision', victim: 0, role: 'coordinator', acknowledged: false, applied: true },
  { failpoint: 'participant-after-prepare', victim: 1, role: 'participant', acknowledged: false, applied: false },
  { failpoint: 'participant-before-commit', victim: 1, role: 'participant', acknowledged: true, applied: true },
  // the coordinator dies before applying its own part: the decision is in etcd, so it applies on restart
  { failpoint: 'participant-before-commit', victim: 0, role: 'coordinator', acknowledged: 'either', applied: true },
  // node 2's object has a replica on node 1: the commit is acknowledged only once every part is
  // applied and pushed, so this crash leaves the client unanswered; the restart applies and pushes
  { failpoint: 'participant-before-commit', victim: 1, role: 'participant', acknowledged: false, applied: true, replicated: true },
])('two-phase commit with a crash at $failpoint on the $role (replicated: $replicated)', ({ failpoint, victim, acknowledged, applied, replicated }) => {
  it(`leaves no lock, applies all or nothing (${applied ? 'all' : 'nothing'}), loses nothing acknowledged`, async () => {
    const prefix = `/loam/2pc-${process.pid}-${++seq}`;
    const env = (armed: boolean) => ({ LOAM_TX_TIMEOUT_MS: TX_TIMEOUT, ...(armed ? { LOAM_FAILPOINTS: failpoint } : {}) });
    const nodes: NodeProcess[] = [];
    for (let i = 0; i < 2; i++) nodes.push(await startClusterNode({ etcd: etcd.endpoints, prefix, env: env(i === victim) }));
    const c = await connect(nodes[victim === 0 ? 1 : 0].url, { deadlineMs: 5000 });
    clients.push(c);
    const a = await c.persist(new Account(100), { backend: 1 });
    const b = await c.persist(new Account(100), { backend: 2 });
    if (replicated) await c.replicate(b, 1);

    const outcome = await c.transaction(async (tx) => {
      const x = await tx.get<Account>(a.$oid!);
      const y = await tx.get<Account>(b.$oid!);
      x.balance -= 30;
      y.balance += 30;
    }, { retries: 0 }).then(() => 'ok', (e: unknown) => e);
    if (acknowledged === true) expect(outcome).toBe('ok');
    else if (acknowledged === false) expect(outcome).toBeInstanceOf(LoamError); // the client was not told it committed
    // The crash races the answer: acknowledged, or an outcome the client could not learn —
    // never an error that claims it was not applied.
    else expect(outcome === 'ok' || (outcome as LoamError).code === 'COMMIT_UNKNOWN', String(outcome)).toBe(true);

    await waitFor(() => nodes[victim].child.exitCode !== null || nodes[victim].child.signalCode !== null, 'the failpoint to kill the victim', 10_000);
    nodes[victim] = await startClusterNode({ etcd: etcd.endpoints, prefix, dataDir: nodes[victim].dataDir, port: nodes[victim].port, peerPort: nodes[victim].peerPort, env: env(false) });

    // No lock is left: a new transaction over both objects goes through (the in-doubt one is
    // resolved by the participants within their timeout).
    await waitFor(() => c.transaction(async (tx) => {
      await tx.get<Account>(a.$oid!);
      await tx.get<Account>(b.$oid!);
    }, { retries: 0 }).then(() => true), 'the objects to be unlocked', 20_000, 100);

    const x = await c.get<Account>(a.$oid!);
    const y = await c.get<Account>(b.$oid!);
    expect(x.balance + y.balance).toBe(200); // all or nothing
    expect(x.balance).toBe(applied ? 70 : 100);
    if (replicated) {
      const viaOne = await connect(nodes[0].url, { deadlineMs: 5000 });
      clients.push(viaOne);
      // the resolving participant applies, releases its lock, then pushes: the copy catches up
      await waitFor(async () => (await viaOne.get<Account>(b.$oid!, { readFrom: 'any' })).balance === y.balance, 'the replica copy to catch up', 10_000);
    }
    // and the objects take writes again, across both nodes
    await c.transaction(async (tx) => {
      (await tx.get<Account>(a.$oid!)).balance += 1;
      (await tx.get<Account>(b.$oid!)).balance -= 1;
    });
    expect((await c.get<Account>(a.$oid!)).balance).toBe(applied ? 71 : 101);
  });
});
