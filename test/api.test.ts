import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connect, Persistent, model, registerModel, Ref, GenericObject, Client,
  NotFoundError, AliasExistsError, WriteConflictError, ReadConflictError, InvalidArgumentError,
  LimitExceededError, UnknownDatasetError, UnavailableError,
} from '@loam/sdk';
import { startNode, type NodeProcess } from './harness/node-process.js';

@model('Api.Employee')
class Employee extends Persistent {
  name: string;
  salary: number;
  boss?: Employee;
  reports: Employee[] = [];
  constructor(name: string, salary: number) {
    super();
    this.name = name;
    this.salary = salary;
  }
  raise(pct: number): number {
    this.salary = Math.round(this.salary * (1 + pct / 100));
    return this.salary;
  }
}

class Department extends Persistent {
  title = '';
  members = new Map<string, Employee>();
  budget = 0n;
  founded = new Date(0);
}
registerModel(Department, 'Api.Department');

let node: NodeProcess;
let client: Client;
const clients: Client[] = [];
async function another(): Promise<Client> {
  const c = await connect(node.url);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  node = await startNode();
  client = await another();
});
afterAll(async () => {
  for (const c of clients) await c.close();
  await node?.stop();
});

describe('SDK against a real node', () => {
  it('persists a graph in one batch and loads it with stubs, keeping identity and cycles', async () => {
    const boss = new Employee('Ada', 100);
    const bob = new Employee('Bob', 50);
    bob.boss = boss;
    boss.reports.push(bob, bob);
    await client.persist(boss, { alias: 'api-ada' });
    expect(boss.$oid).toMatch(/^[0-9a-f]{32}$/);
    expect(bob.$oid).toMatch(/^[0-9a-f]{32}$/);
    expect(boss.$version).toBe(1);

    const other = await another();
    const ada = await other.getByAlias<Employee>('api-ada');
    expect(ada).toBeInstanceOf(Employee);
    expect(ada.name).toBe('Ada');
    expect(ada.raise(10)).toBe(110); // methods work: it is a real instance
    const stub = ada.reports[0];
    expect(stub.$loaded).toBe(false);
    expect(ada.reports[1]).toBe(stub);
    await other.load(stub);
    expect(stub.$loaded).toBe(true);
    expect(stub.name).toBe('Bob');
    expect(stub.boss).toBe(ada); // the cycle closes on the same instance
    expect(await other.get(ada.$oid!)).toBe(ada); // identity map
  });

  it('round-trips rich field types through the node', async () => {
    const d = new Department();
    d.title = 'R&D';
    d.budget = 2n ** 70n;
    d.founded = new Date('2020-05-05T00:00:00Z');
    const e = new Employee('Cy', 1);
    d.members.set('cy', e);
    await client.persist(d);
    const other = await another();
    const got = await other.get<Department>(d.$oid!);
    expect(got.budget).toBe(2n ** 70n);
    expect(got.founded.toISOString()).toBe('2020-05-05T00:00:00.000Z');
    expect(got.members.get('cy')!.$oid).toBe(e.$oid);
  });

  it('save detects a concurrent change with WriteConflictError', async () => {
    const e = await client.persist(new Employee('Dee', 10));
    const other = await another();
    const theirs = await other.get<Employee>(e.$oid!);
    theirs.salary = 20;
    await other.save(theirs);
    expect(theirs.$version).toBe(2);
    e.salary = 30;
    await expect(client.save(e)).rejects.toBeInstanceOf(WriteConflictError);
    const fresh = await client.get<Employee>(e.$oid!);
    expect(fresh.salary).toBe(20);
    fresh.salary = 31;
    await client.save(fresh);
    expect((await other.get<Employee>(e.$oid!)).salary).toBe(31);
  });

  it('save creates new objects the saved one now reaches', async () => {
    const e = await client.persist(new Employee('Eve', 1));
    e.reports.push(new Employee('Fay', 2));
    await client.save(e);
    expect(e.reports[0].$oid).toBeDefined();
    const other = await another();
    const fay = await other.get<Employee>(e.reports[0].$oid!);
    expect(fay.name).toBe('Fay');
  });

  it('deletes objects and aliases', async () => {
    const e = await client.persist(new Employee('Gus', 1), { alias: 'api-gus' });
    const oid = e.$oid!;
    await client.addAlias(e, 'api-gus-2');
    await expect(client.addAlias(e, 'api-gus')).rejects.toBeInstanceOf(AliasExistsError);
    await expect(client.persist(new Employee('Imposter', 1), { alias: 'api-gus' })).rejects.toBeInstanceOf(AliasExistsError);
    await client.deleteAlias('api-gus-2');
    await expect(client.getByAlias('api-gus-2')).rejects.toBeInstanceOf(NotFoundError);
    await client.delete(e);
    expect(e.$oid).toBeUndefined();
    await expect(client.get(oid)).rejects.toBeInstanceOf(NotFoundError);
    await expect(client.deleteAlias('never-there')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('transactions commit atomically and retry on conflict', async () => {
    const a = await client.persist(new Employee('Hal', 100));
    const b = await client.persist(new Employee('Ivy', 100));
    let runs = 0;
    const other = await another();
    await client.transaction(async (tx) => {
      runs++;
      const x = await tx.get<Employee>(a.$oid!);
      const y = await tx.get<Employee>(b.$oid!);
      if (runs === 1) {
        const theirs = await other.get<Employee>(a.$oid!); // someone else changes a mid-transaction
        theirs.salary = 0;
        await other.save(theirs);
      }
      x.salary -= 10;
      y.salary += 10;
      tx.persist(new Employee('Jo', 1), { alias: 'api-jo' });
    });
    expect(runs).toBe(2);
    expect((await client.get<Employee>(a.$oid!)).salary).toBe(-10);
    expect((await client.get<Employee>(b.$oid!)).salary).toBe(110);
    expect((await client.getByAlias<Employee>('api-jo')).name).toBe('Jo');
  });

  it('retries: 0 surfaces WriteConflictError, and an aborted transaction changes nothing', async () => {
    const a = await client.persist(new Employee('Kit', 5));
    const other = await another();
    const err = await client.transaction(async (tx) => {
      const x = await tx.get<Employee>(a.$oid!);
      const theirs = await other.get<Employee>(a.$oid!);
      theirs.salary = 6;
      await other.save(theirs);
      x.salary = 7;
      tx.persist(new Employee('Never', 0), { alias: 'api-never' });
    }, { retries: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WriteConflictError);
    expect((await client.get<Employee>(a.$oid!)).salary).toBe(6);
    await expect(client.getByAlias('api-never')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('a transaction that only read a changed object fails with ReadConflictError', async () => {
    const a = await client.persist(new Employee('Lou', 1));
    const b = await client.persist(new Employee('Max', 1));
    const other = await another();
    const err = await client.transaction(async (tx) => {
      const x = await tx.get<Employee>(a.$oid!);
      const y = await tx.get<Employee>(b.$oid!);
      const theirs = await other.get<Employee>(a.$oid!);
      theirs.salary = 99;
      await other.save(theirs);
      y.salary = x.salary + 1; // decided on a stale read
    }, { retries: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReadConflictError);
    expect((await client.get<Employee>(b.$oid!)).salary).toBe(1);
  });

  it('a failing transaction function aborts and rethrows its own error', async () => {
    const a = await client.persist(new Employee('Ned', 1));
    await expect(client.transaction(async (tx) => {
      (await tx.get<Employee>(a.$oid!)).salary = 1000;
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect((await client.get<Employee>(a.$oid!)).salary).toBe(1);
  });

  it('refs resolve from any process, batched', async () => {
    const e = await client.persist(new Employee('Oz', 3));
    const s = client.ref(e).toString();
    expect(s).toBe(`loam://${client.host}:${client.port}/default/${e.$oid}`);
    const other = await another();
    const [x, y] = await Promise.all([other.resolve<Employee>(s), other.resolve<Employee>(Ref.parse(s))]);
    expect(x).toBe(y);
    expect(x.name).toBe('Oz');
    other.prefetch(s);
    expect(await other.resolve(s)).toBe(x);
    await expect(other.resolve('loam://h:1/default/nothex')).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('an object of an unregistered class loads as a generic object and saves back intact', async () => {
    const other = await another();
    const oid = (await client.persist(new Employee('Pam', 4))).$oid!;
    // simulate a process without the class by writing a record under an unknown class name
    const rec = { oid, className: 'Api.Unknown', state: (await other.conn.get({ dataset: 'default', oids: [oid] })).objects[0].state, expectedVersion: 1, origin: '' };
    await other.conn.commit({ dataset: 'default', reads: [], writes: [rec], deletes: [], aliasSets: [], aliasDeletes: [], commitId: '', attempt: 0 });
    const g = await other.get<GenericObject>(oid);
    expect(g).toBeInstanceOf(GenericObject);
    expect(g.name).toBe('Pam');
    expect(g.$className).toBe('Api.Unknown');
    g.salary = 5;
    await other.save(g);
    const raw = await other.conn.get({ dataset: 'default', oids: [oid] });
    expect(raw.objects[0].className).toBe('Api.Unknown');
  });

  it('enforces limits with typed errors before anything is written', async () => {
    const big = new Employee('x'.repeat(5 * 1024 * 1024), 1);
    await expect(client.persist(big)).rejects.toBeInstanceOf(LimitExceededError);
    expect(big.$oid).toBeUndefined();
    await expect(client.persist(new Employee('y', 1), { alias: 'bad alias!' })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(client.get('not-an-oid')).rejects.toBeInstanceOf(InvalidArgumentError);
    class Unregistered extends Persistent {}
    await expect(client.persist(new Unregistered())).rejects.toThrow(/not a registered model/);
  });

  it('datasets: unknown ones are refused, created ones are separate', async () => {
    await expect(connect(node.url.replace('/default', '/nosuch'))).rejects.toBeInstanceOf(UnknownDatasetError);
    expect(await client.createDataset('api-other')).toBe(true);
    expect(await client.createDataset('api-other')).toBe(false);
    expect(await client.datasets()).toContain('api-other');
    const o = await connect(node.url.replace('/default', '/api-other'));
    clients.push(o);
    const e = await o.persist(new Employee('Quin', 1), { alias: 'api-ada' }); // same alias, other dataset
    await expect(client.get(e.$oid!)).rejects.toBeInstanceOf(NotFoundError);
    expect((await o.getByAlias<Employee>('api-ada')).name).toBe('Quin');
  });

  it('concurrent commits share calls but succeed or fail each on its own', async () => {
    const mine = await Promise.all(Array.from({ length: 20 }, (_, i) => client.persist(new Employee(`co-${i}`, i))));
    const other = await another();
    for (let i = 0; i < 20; i += 2) {
      const theirs = await other.get<Employee>(mine[i].$oid!);
      theirs.salary = -1;
      await other.save(theirs); // every even one is now stale in `client`
    }
    for (const e of mine) e.salary += 100;
    const results = await Promise.allSettled(mine.map((e) => client.save(e))); // issued together: coalesced
    results.forEach((r, i) => {
      if (i % 2 === 0) expect(r.status === 'rejected' && r.reason instanceof WriteConflictError).toBe(true);
      else expect(r.status).toBe('fulfilled');
    });
    const back = await Promise.all(mine.map((e) => other.get<Employee>(e.$oid!)));
    back.forEach((e, i) => expect(e.salary).toBe(i % 2 === 0 ? -1 : i + 100));
  });

  it('lists backends', async () => {
    const b = await client.backends();
    expect(b).toHaveLength(1);
    expect(b[0]).toMatchObject({ number: 1, address: `127.0.0.1:${node.port}`, state: 'ready' });
  });

  it('fails fast and typed when no node listens', async () => {
    await expect(connect('loam://127.0.0.1:1/default', { connectTimeoutMs: 500 })).rejects.toBeInstanceOf(UnavailableError);
  });
});
