/**
 * The secret the nodes prove membership to each other with (`loam node --cluster-secret-file`).
 * Created once with random bytes and never rewritten: a new secret would split running nodes
 * from restarted ones, so the reconcile only creates it when it is missing (never applies it).
 */
import { randomBytes } from 'node:crypto';
import type { DataStore } from '../crd/types.js';
import { CLUSTER_SECRET_KEY } from './config-map.js';
import { childMeta, names, type ChildMeta } from './labels.js';

export interface Secret {
  apiVersion: 'v1';
  kind: 'Secret';
  metadata: ChildMeta;
  type: 'Opaque';
  immutable: true;
  data: Record<string, string>;
}

export function buildClusterSecret(ds: DataStore, random: (n: number) => Buffer = randomBytes): Secret {
  // The file's content is the secret: 32 random bytes, base64 text (the node wants at least 16 bytes).
  const secret = random(32).toString('base64');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: childMeta(ds, names.clusterSecret(ds), 'node'),
    type: 'Opaque',
    immutable: true,
    data: { [CLUSTER_SECRET_KEY]: Buffer.from(secret, 'utf8').toString('base64') },
  };
}
