import { describe, expect, it } from 'vitest';
import { checkBank, type AccountView, type BankHistory, type BankReadOp, type TransferOp } from './bank-checker.js';
import { checkRegister, INITIAL_WID, type RegReadOp, type RegWriteOp, type RegisterHistory } from './register-checker.js';
import type { Outcome } from './history.js';

const kinds = (xs: { kind: string }[]) => [...new Set(xs.map((x) => x.kind))].sort();

// ------------------------------------------------------------------------------------------ bank

function transfer(id: string, from: number, to: number, amount: number, start: number, end: number, outcome: Outcome, moved?: boolean): TransferOp {
  return { type: 'transfer', id, client: 'w0', from, to, amount, start, end, outcome, moved };
}
function read(id: string, start: number, end: number, accounts: AccountView[]): BankReadOp {
  return { type: 'read', id, client: 'reader', start, end, outcome: 'ok', accounts };
}
const acct = (balance: number, recent: string[] = [], chunk: string | null = null): AccountView => ({ balance, recent, chunk });

/**
 * Three accounts of 100. t1 moves 10 from 0 to 1 (acknowledged), t2 moves 5 from 1 to 2 (unknown
 * outcome, applied), t3 50 from 2 to 0 (conflict: not applied), t4 is an acknowledged no-op,
 * t5 moves 20 from 0 to 2 (unknown, not applied). Account 0's older ids sit in a chunk.
 */
function validBank(): BankHistory {
  return {
    initial: [100, 100, 100],
    transfers: [
      transfer('t1', 0, 1, 10, 0, 10, 'ok', true),
      transfer('t2', 1, 2, 5, 5, 30, 'unknown'),
      transfer('t3', 2, 0, 50, 12, 20, 'fail'),
      transfer('t4', 1, 0, 500, 40, 45, 'ok', false),
      transfer('t5', 0, 2, 20, 50, 60, 'unknown'),
    ],
    reads: [
      read('r1', 1, 8, [acct(100), acct(100), acct(100)]), // began before t1 was acknowledged: may miss it
      read('r2', 11, 14, [acct(90, [], 'c0'), acct(110, ['t1']), acct(100)]),
      read('r3', 31, 35, [acct(90, [], 'c0'), acct(105, ['t1', 't2']), acct(105, ['t2'])]),
    ],
    faults: [{ kind: 'kill', target: 'node 2', start: 20, end: 40 }],
    final: {
      accounts: [acct(90, [], 'c0'), acct(105, ['t1', 't2']), acct(105, ['t2'])],
      chunks: { c0: { ids: ['t1'], prev: null } },
    },
  };
}

describe('bank checker', () => {
  it('passes a valid history (concurrent read missing a transfer, unknown applied once or not at all, a no-op)', () => {
    expect(checkBank(validBank())).toEqual([]);
  });

  it('flags an acknowledged transfer applied twice', () => {
    const h = validBank();
    // t1 applied again: both logs hold it twice and the balances moved twice (still conserved).
    h.final.accounts = [acct(80, ['t1'], 'c0'), acct(115, ['t1', 't2', 't1']), acct(105, ['t2'])];
    const a = checkBank(h);
    expect(kinds(a)).toEqual(['duplicate-transfer']);
    expect(a[0].ops).toEqual(['t1']);
  });

  it('reads that saw a transfer applied twice are consistent with the final log (only the duplicate is flagged)', () => {
    const h = validBank();
    h.reads.push(read('r4', 31, 35, [acct(80, ['t1'], 'c0'), acct(115, ['t1', 't2', 't1']), acct(105, ['t2'])]));
    h.final.accounts = [acct(80, ['t1'], 'c0'), acct(115, ['t1', 't2', 't1']), acct(105, ['t2'])];
    expect(kinds(checkBank(h))).toEqual(['duplicate-transfer']);
    h.reads.push(read('r5', 36, 37, [acct(80, ['t1'], 'c0'), acct(115, ['t1', 't1', 't2']), acct(105, ['t2'])])); // another order
    expect(kinds(checkBank(h))).toEqual(['duplicate-transfer', 'read-state-lost']);
  });

  it('flags an unknown transfer applied twice and a definitely failed one applied', () => {
    const h = validBank();
    h.final.accounts = [acct(140, ['t3'], 'c0'), acct(100, ['t1', 't2', 't2']), acct(60, ['t2', 't3', 't2'])];
    expect(kinds(checkBank(h))).toEqual(['duplicate-transfer', 'failed-transfer-applied']);
  });

  it('flags an acknowledged no-op that applied (an earlier run of its function committed too)', () => {
    const h = validBank();
    h.transfers[3] = transfer('t4', 1, 0, 5, 40, 45, 'ok', false);
    h.final.accounts = [acct(95, ['t4'], 'c0'), acct(100, ['t1', 't2', 't4']), acct(105, ['t2'])];
    expect(kinds(checkBank(h))).toEqual(['noop-transfer-applied']);
  });

  it('flags a lost acknowledged transfer', () => {
    const h = validBank();
    h.reads = [h.reads[0]];
    h.final = { accounts: [acct(100), acct(95, ['t2']), acct(105, ['t2'])], chunks: {} };
    expect(kinds(checkBank(h))).toEqual(['lost-transfer']);
  });

  it('flags a transfer applied on one side only, and balances that do not add up', () => {
    const h = validBank();
    h.reads = h.reads.slice(0, 2); // r3 saw t2 on both sides
    h.final.accounts = [acct(90, [], 'c0'), acct(110, ['t1']), acct(105, ['t2'])];
    expect(kinds(checkBank(h))).toEqual(['balance-not-conserved', 'partial-transfer']);
  });

  it('flags a read that misses a transfer acknowledged before it began (stale read)', () => {
    const h = validBank();
    h.reads.push(read('r4', 12, 13, [acct(100), acct(100), acct(100)]));
    const a = checkBank(h);
    expect(kinds(a)).toEqual(['stale-read']);
    expect(a[0].ops).toEqual(['r4', 't1']);
  });

  it('flags a read whose balances are not conserved, and one that saw a transfer from its future', () => {
    const h = validBank();
    h.reads.push(read('r4', 12, 13, [acct(90, [], 'c0'), acct(110, ['t1']), acct(90)]));
    h.reads.push(read('r5', 1, 2, [acct(90, [], 'c0'), acct(105, ['t1', 't2']), acct(105, ['t2'])])); // t2 began at 5
    expect(kinds(checkBank(h))).toEqual(['balance-log-mismatch', 'balance-not-conserved', 'future-read']);
  });

  it('flags a read that saw state the final history does not have', () => {
    const h = validBank();
    h.reads.push(read('r4', 36, 38, [acct(90, [], 'c9'), acct(105, ['t1', 't2']), acct(105, ['t2'])]));
    expect(kinds(checkBank(h))).toEqual(['read-state-lost']);
  });

  it('flags an id in a log that no transfer of that account wrote', () => {
    const h = validBank();
    h.final.accounts[2] = acct(105, ['t2', 'zz']);
    expect(kinds(checkBank(h))).toEqual(['phantom-transfer']);
  });
});

// ------------------------------------------------------------------------------------------ register

function write(id: string, reg: number, n: number, prev: string, start: number, end: number, outcome: Outcome, group?: string): RegWriteOp {
  return { type: 'write', id, client: 'w0', reg, n, prev, via: group ? 'tx2' : 'save', group, start, end, outcome };
}
function rread(id: string, reg: number, mode: 'master' | 'any', start: number, end: number, n: number, wid: string): RegReadOp {
  return { type: 'read', id, client: 'rd0', reg, mode, node: 1, start, end, outcome: 'ok', value: { n, wid } };
}

/**
 * Register 0: a (n 1) acknowledged, b (n 2 over a) unknown but applied, c (n 2 over a) a
 * conflict. Register 1: d (n 1) unknown, not applied. Reads: one concurrent with a that misses
 * it, one after a, a replica read after b began (b not acknowledged: either value is fine).
 */
function validRegister(): RegisterHistory {
  return {
    registers: 2,
    writes: [
      write('a', 0, 1, INITIAL_WID, 0, 10, 'ok'),
      write('b', 0, 2, 'a', 20, 40, 'unknown'),
      write('c', 0, 2, 'a', 21, 30, 'fail'),
      write('d', 1, 1, INITIAL_WID, 5, 50, 'unknown'),
    ],
    reads: [
      rread('r1', 0, 'master', 5, 12, 0, INITIAL_WID),
      rread('r2', 0, 'master', 11, 13, 1, 'a'),
      rread('r3', 0, 'any', 25, 27, 1, 'a'),
      rread('r4', 0, 'any', 45, 47, 2, 'b'),
      rread('r5', 1, 'any', 45, 47, 0, INITIAL_WID),
    ],
    faults: [],
    final: [{ n: 2, wid: 'b' }, { n: 0, wid: INITIAL_WID }],
  };
}

describe('register checker', () => {
  it('passes a valid history', () => {
    expect(checkRegister(validRegister())).toEqual([]);
  });

  it('flags a lost acknowledged write (two writes acknowledged over the same value)', () => {
    const h = validRegister();
    h.writes.push(write('e', 0, 3, 'a', 41, 44, 'ok')); // based on a, like b: one of them is lost
    h.final[0] = { n: 3, wid: 'e' };
    h.reads = h.reads.filter((r) => r.id !== 'r4');
    const a = checkRegister(h);
    expect(kinds(a)).toEqual(['corrupt-chain']); // e wrote n 3 over a at n 1: the chain is broken
    h.writes[4] = write('e', 0, 2, 'a', 41, 44, 'ok');
    h.writes[1] = write('b', 0, 2, 'a', 20, 40, 'ok');
    h.final[0] = { n: 2, wid: 'e' };
    const lost = checkRegister(h);
    expect(kinds(lost)).toEqual(['lost-write']);
    expect(lost[0].ops).toEqual(['b', 'e']);
  });

  it('flags an acknowledged write missing at the end (final value older)', () => {
    const h = validRegister();
    h.writes[1] = write('b', 0, 2, 'a', 20, 40, 'ok');
    h.reads = h.reads.filter((r) => r.id !== 'r4');
    h.final[0] = { n: 1, wid: 'a' };
    expect(kinds(checkRegister(h))).toEqual(['lost-write']);
  });

  it('flags a stale master read and a stale replica read', () => {
    const h = validRegister();
    h.reads.push(rread('r6', 0, 'master', 15, 16, 0, INITIAL_WID));
    h.reads.push(rread('r7', 0, 'any', 15, 16, 0, INITIAL_WID));
    const a = checkRegister(h);
    expect(kinds(a)).toEqual(['stale-read', 'stale-replica-read']);
    expect(a.map((x) => x.ops)).toEqual([['r6', 'a'], ['r7', 'a']]);
  });

  it('flags reads of values never written, of failed writes, from the future, and later undone', () => {
    const h = validRegister();
    h.reads.push(rread('r6', 0, 'any', 50, 51, 7, 'zz'));
    h.reads.push(rread('r7', 0, 'master', 31, 32, 2, 'c'));
    h.reads.push(rread('r8', 1, 'master', 1, 2, 1, 'd'));
    expect(kinds(checkRegister(h))).toEqual(['future-read', 'phantom-read', 'read-of-failed-write', 'read-value-lost']);
  });

  it('flags a definitely failed write in the final history, and half of a two-register transaction', () => {
    const h = validRegister();
    h.writes.push(write('x.0', 0, 3, 'b', 60, 70, 'unknown', 'x'));
    h.writes.push(write('x.1', 1, 1, INITIAL_WID, 60, 70, 'unknown', 'x'));
    h.writes[2] = write('c', 0, 2, 'a', 21, 30, 'fail');
    h.final[0] = { n: 3, wid: 'x.0' };
    expect(kinds(checkRegister(h))).toEqual(['partial-transaction']);
    h.writes[1] = write('b', 0, 2, 'a', 20, 40, 'fail');
    expect(kinds(checkRegister(h))).toEqual(['failed-write-applied', 'partial-transaction']); // r4 read b: no anomaly of its own
  });
});
