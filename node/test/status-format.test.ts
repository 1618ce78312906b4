/** `loam status --datastore NAME`'s formatting (node/src/cli-status.ts): phase, conditions, nodes, drain and roll progress. */
import { describe, expect, it } from 'vitest';
import type { NodeStatus } from '@loam/sdk';
import type { DataStore } from '@loam/operator';
import { formatDataStore, progressOf, type DataStoreView } from '../src/cli-status.js';

const NOW = Date.parse('2026-12-02T03:00:00Z');

function dataStore(status: DataStore['status'], extra: Partial<DataStore['metadata']> = {}): DataStore {
  return { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name: 'shop', namespace: 'prod', generation: 4, ...extra }, spec: { nodes: 3 }, status };
}

const conditions = [
  { type: 'Ready', status: 'False' as const, reason: 'NodesNotReady', message: '2 of 3 nodes ready', lastTransitionTime: '2026-12-02T02:58:55Z', observedGeneration: 4 },
  { type: 'Progressing', status: 'True' as const, reason: 'Draining', message: 'draining shop-2 before scale-down', lastTransitionTime: '2026-12-02T02:59:30Z', observedGeneration: 4 },
];

describe('formatDataStore', () => {
  it('shows the phase, the conditions, the nodes, and a drain with a progress bar from the node\'s own status', () => {
    const ds = dataStore({
      phase: 'Scaling',
      readyNodes: 2,
      observedGeneration: 4,
      endpoint: 'loam://shop.prod.svc:7480',
      conditions,
      nodes: [
        { name: 'shop-0', backend: 1, ready: true, objects: 1200, uploadBacklogBytes: 0 },
        { name: 'shop-1', backend: 2, ready: true, objects: 1180, uploadBacklogBytes: 1536 },
        { name: 'shop-2', backend: 3, ready: false, draining: true, objects: 720, uploadBacklogBytes: 0, endpoint: 'loam://10.0.0.7:7480' },
      ],
    });
    const live = [{ reachable: true, number: 3, address: '10.0.0.7:7480', state: 'ready', objects: 720, diskBytes: 0, draining: { objectsLeft: 720, objectsTotal: 1200 }, s3: null }] as unknown as NodeStatus[];
    const out = formatDataStore({ namespace: 'prod', ds, live, now: NOW });
    expect(out.split('\n')).toEqual([
      'DataStore shop in prod: Scaling, 2 of 3 nodes ready  (endpoint loam://shop.prod.svc:7480)',
      '',
      'CONDITION    STATUS  REASON         AGE    MESSAGE',
      'Ready        False   NodesNotReady  1m05s  2 of 3 nodes ready',
      'Progressing  True    Draining       30.0s  draining shop-2 before scale-down',
      '',
      'NODE    BACKEND  READY  OBJECTS  BACKLOG',
      'shop-0        1  yes       1200      0 B',
      'shop-1        2  yes       1180  1.5 KiB',
      'shop-2        3  no         720      0 B  draining',
      '',
      'shop-2 draining  [############------------------]  40%  480 of 1200 objects moved, 720 left',
    ]);
    expect(progressOf({ namespace: 'prod', ds, live })).toEqual({ drains: [{ node: 'shop-2', backend: 3, objectsLeft: 720, objectsTotal: 1200 }] });
  });

  it('without the node\'s answer, says how many objects a drain has left and why there is no bar', () => {
    const ds = dataStore({ phase: 'Scaling', readyNodes: 2, observedGeneration: 4, nodes: [{ name: 'shop-2', backend: 3, ready: false, draining: true, objects: 17 }] });
    const out = formatDataStore({ namespace: 'prod', ds, now: NOW });
    expect(out).toContain('shop-2 draining: 17 objects left (the node did not answer from here');
    expect(out).not.toContain('[#');
    expect(progressOf({ namespace: 'prod', ds }).drains).toEqual([{ node: 'shop-2', backend: 3, objectsLeft: 17 }]);
  });

  it('shows a rolling upgrade from the StatefulSet\'s revisions: pods updated of replicas', () => {
    const ds = dataStore({ phase: 'Upgrading', readyNodes: 3, observedGeneration: 4, nodes: [] });
    const v: DataStoreView = {
      namespace: 'prod',
      ds,
      statefulSet: { name: 'shop', replicas: 3, readyReplicas: 3, updatedReplicas: 1, currentRevision: 'shop-6d8f', updateRevision: 'shop-7a9c', partition: 2 },
      now: NOW,
    };
    const out = formatDataStore(v);
    expect(out).toContain('rolling upgrade  [##########--------------------]  33%  1 of 3 pods updated (revision shop-6d8f -> shop-7a9c; pods from ordinal 2 up are being updated)');
    expect(progressOf(v).roll).toEqual({ updated: 1, replicas: 3, currentRevision: 'shop-6d8f', updateRevision: 'shop-7a9c', partition: 2 });
    // Same revision: no roll in progress.
    const settled = formatDataStore({ ...v, statefulSet: { ...v.statefulSet!, updatedReplicas: 3, currentRevision: 'shop-7a9c' } });
    expect(settled).not.toContain('rolling upgrade');
  });

  it('a DataStore the operator has not acted on yet, or that is being deleted, says so', () => {
    const fresh = formatDataStore({ namespace: 'prod', ds: dataStore(undefined, { generation: 1 }), now: NOW });
    expect(fresh.split('\n')).toEqual([
      'DataStore shop in prod: no status yet, 0 of 3 nodes ready',
      'the operator has not acted on the latest spec yet (generation 1, observed none)',
      '',
      'no nodes reported yet',
    ]);
    const going = formatDataStore({ namespace: 'prod', ds: dataStore({ phase: 'Deleting', observedGeneration: 4 }, { deletionTimestamp: '2026-12-02T02:59:00Z' }), now: NOW });
    expect(going).toContain('DataStore shop in prod: Deleting');
    expect(going).toContain('being deleted (deletionPolicy Retain)');
    expect(going).not.toContain('has not acted');
  });
});
