import { afterAll, beforeAll } from 'vitest';
import { connect, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './etcd.js';
import { startClusterNode, waitFor, type NodeProcess } from './node-process.js';

/**
 * A real etcd for one test file, clusters of `loam node` processes on it (each under a prefix of
 * its own), and SDK clients that are closed after the file. Nodes are stopped by test/setup.ts.
 */
export function clusterFixture(name: string, opts: { members?: number; deadlineMs?: number } = {}) {
  let etcd: EtcdCluster | undefined;
  let seq = 0;
  const clients: Client[] = [];
  beforeAll(async () => {
    etcd = await startEtcd({ members: opts.members ?? 1 });
  });
  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
  });
  const endpoints = () => {
    if (!etcd) throw new Error('the cluster fixture is used before its beforeAll ran');
    return etcd.endpoints;
  };
  return {
    /** A fresh key prefix: a DataStore of its own. */
    prefix: () => `/loam/${name}-${process.pid}-${++seq}`,
    /** Starts a node of the DataStore under `prefix` (`env` for failpoints, `args` for more flags). */
    node: (prefix: string, extra: { env?: Record<string, string>; args?: string[]; restart?: NodeProcess } = {}) => startClusterNode({
      etcd: endpoints(), prefix, env: extra.env, args: extra.args,
      ...(extra.restart ? { dataDir: extra.restart.dataDir, port: extra.restart.port, peerPort: extra.restart.peerPort } : {}),
    }),
    /** `n` nodes of a new DataStore. */
    async cluster(n: number): Promise<NodeProcess[]> {
      const prefix = this.prefix();
      const nodes: NodeProcess[] = [];
      for (let i = 0; i < n; i++) nodes.push(await this.node(prefix));
      return nodes;
    },
    async client(node: NodeProcess, deadlineMs = opts.deadlineMs ?? 10_000): Promise<Client> {
      const c = await connect(node.url, { deadlineMs });
      clients.push(c);
      return c;
    },
  };
}

/** Resolves once the node's process is gone (killed, or killed itself at a failpoint). */
export function untilDead(node: NodeProcess): Promise<unknown> {
  return waitFor(() => node.child.exitCode !== null || node.child.signalCode !== null, 'the node to die');
}
