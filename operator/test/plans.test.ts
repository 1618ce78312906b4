/** The reconcile's decisions as pure functions: scale-down drains, rollout partitions, status and conditions. */
import { describe, expect, it } from 'vitest';
import type { NodeAdminStatus } from '../src/controller/contract.js';
import { planScale, type ScaleInput } from '../src/controller/scale-down.js';
import { planRollout, type RolloutInput } from '../src/controller/rollout.js';
import { computeStatus, type Observation } from '../src/controller/status.js';
import { onNewVolume, type PodObj } from '../src/controller/objects.js';
import type { DataStore } from '../src/crd/types.js';

const node = (i: number, over: Partial<NodeAdminStatus> = {}): NodeAdminStatus => ({ id: `s-${i}`, number: i + 1, state: 'ready', objects: 10, draining: null, s3: null, ...over });
const scale = (over: Partial<ScaleInput>): ScaleInput => ({ desired: 3, replicas: 3, setName: 's', uid: 'u', generation: 2, nodes: [node(0), node(1), node(2)], rolling: false, joined: new Set(['s-0', 's-1', 's-2']), ...over });

describe('planScale', () => {
  it('creates and scales up at once', () => {
    expect(planScale(scale({ replicas: undefined }))).toEqual({ replicas: 3, cancel: [] });
    expect(planScale(scale({ desired: 5 }))).toEqual({ replicas: 5, cancel: [] });
  });
  it('drains the highest ordinal first with a deterministic op id, and keeps the replicas', () => {
    const p = planScale(scale({ desired: 1 }));
    expect(p.replicas).toBe(3);
    expect(p.drain).toEqual({ pod: 's-2', number: 3, opId: 'scale-down/u/s-2/2' });
    expect(planScale(scale({ desired: 1 })).drain).toEqual(p.drain);
  });
  it('waits while the drain runs, shrinks by one once the node is drained and empty', () => {
    const running = planScale(scale({ desired: 2, nodes: [node(0), node(1), node(2, { draining: { objectsLeft: 4, objectsTotal: 10 } })] }));
    expect(running).toMatchObject({ replicas: 3, scalingDown: { pod: 's-2', objectsLeft: 4, objectsTotal: 10 } });
    expect(running.drain).toBeUndefined();
    const drainedNotEmpty = planScale(scale({ desired: 2, nodes: [node(0), node(1), node(2, { state: 'drained', objects: 1 })] }));
    expect(drainedNotEmpty.replicas).toBe(3);
    const done = planScale(scale({ desired: 2, nodes: [node(0), node(1), node(2, { state: 'drained', objects: 0 })] }));
    expect(done).toMatchObject({ replicas: 2, shrinking: 's-2' });
    // Missing from the Status: unreachable if it joined once (wait), empty if it never did.
    expect(planScale(scale({ desired: 2, nodes: [node(0), node(1)] }))).toMatchObject({ replicas: 3, scalingDown: { pod: 's-2' } });
    expect(planScale(scale({ desired: 2, nodes: [node(0), node(1)], joined: new Set(['s-0', 's-1']) })).replicas).toBe(2);
  });
  it('never shrinks without the nodes\' status, nor during a rollout', () => {
    expect(planScale(scale({ desired: 1, nodes: undefined }))).toMatchObject({ replicas: 3, scalingDown: { pod: 's-2' } });
    expect(planScale(scale({ desired: 1, nodes: undefined })).drain).toBeUndefined();
    expect(planScale(scale({ desired: 1, rolling: true })).drain).toBeUndefined();
  });
  it('cancels a drain whose node is wanted again', () => {
    const p = planScale(scale({ desired: 3, nodes: [node(0), node(1), node(2, { draining: { objectsLeft: 1, objectsTotal: 2 } })] }));
    expect(p).toEqual({ replicas: 3, cancel: [{ pod: 's-2', number: 3 }] });
    const drained = planScale(scale({ desired: 3, nodes: [node(0), node(1), node(2, { state: 'drained', objects: 0 })] }));
    expect(drained.cancel).toEqual([{ pod: 's-2', number: 3 }]);
  });
});

const roll = (over: Partial<RolloutInput>): RolloutInput => ({
  live: { templateHash: 'h2', partition: 2, updateRevision: 'r2', statusCurrent: true },
  desiredTemplateHash: 'h2',
  replicas: 3,
  pods: [0, 1, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: true, revision: 'r1' })),
  nodes: [node(0), node(1), node(2)],
  ...over,
});

describe('planRollout', () => {
  it('partition 0 for a new StatefulSet; replicas-1 when the template changes', () => {
    expect(planRollout(roll({ live: undefined }))).toEqual({ partition: 0, rolling: false, updated: 0 });
    expect(planRollout(roll({ live: { templateHash: 'h1', partition: 0, updateRevision: 'r1', statusCurrent: true } }))).toMatchObject({ partition: 2, rolling: true });
  });
  it('waits for the updated Pod to be Ready and its node ready before moving down', () => {
    expect(planRollout(roll({}))).toMatchObject({ partition: 2, rolling: true, waiting: 'node 2 to be replaced' });
    const pods = (rev2: number[], notReady: number[] = []) => [0, 1, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: !notReady.includes(o), revision: rev2.includes(o) ? 'r2' : 'r1' }));
    expect(planRollout(roll({ pods: pods([2], [2]) }))).toMatchObject({ partition: 2, waiting: 's-2 to be Ready' });
    expect(planRollout(roll({ pods: pods([2]), nodes: [node(0), node(1)] }))).toMatchObject({ partition: 2, waiting: 's-2 to rejoin the cluster' });
    expect(planRollout(roll({ pods: pods([2]) }))).toMatchObject({ partition: 1, rolling: true, updated: 1 });
    expect(planRollout(roll({ pods: pods([1, 2]), live: { templateHash: 'h2', partition: 1, updateRevision: 'r2', statusCurrent: true } }))).toMatchObject({ partition: 0 });
    expect(planRollout(roll({ pods: pods([0, 1, 2]), live: { templateHash: 'h2', partition: 0, updateRevision: 'r2', statusCurrent: true } }))).toEqual({ partition: 0, rolling: false, updated: 3 });
    expect(planRollout(roll({ pods: pods([0, 1, 2], [0]), live: { templateHash: 'h2', partition: 0, updateRevision: 'r2', statusCurrent: true } }))).toMatchObject({ partition: 0, rolling: true, waiting: 's-0 to be Ready and rejoin the cluster' });
    // Complete by the StatefulSet's word: a Pod down afterwards is no roll.
    expect(planRollout(roll({ pods: pods([0, 1, 2], [0]), live: { templateHash: 'h2', partition: 0, updateRevision: 'r2', currentRevision: 'r2', statusCurrent: true } }))).toEqual({ partition: 0, rolling: false, updated: 3 });
  });
  it('does not gate on Pods when none is Ready (nothing serves)', () => {
    const down = [0, 1, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: false, revision: 'r1' }));
    expect(planRollout(roll({ pods: down, live: { templateHash: 'h1', partition: 0, updateRevision: 'r1', statusCurrent: true } }))).toEqual({ partition: 0, rolling: false, updated: 0 });
  });
  it('a Pod missing after the StatefulSet called the roll complete (deleted, or a scale-up) is no roll; during a roll it is waited for', () => {
    const two = [0, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: true, revision: 'r2' }));
    const done = { templateHash: 'h2', partition: 0, updateRevision: 'r2', currentRevision: 'r2', statusCurrent: true };
    expect(planRollout(roll({ pods: two, live: done }))).toEqual({ partition: 0, rolling: false, updated: 2 });
    expect(planRollout(roll({ replicas: 5, live: done, pods: [0, 1, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: true, revision: 'r2' })) }))).toEqual({ partition: 0, rolling: false, updated: 3 });
    // Mid-roll (currentRevision still the old one): the Pod being replaced holds the partition.
    const mid = [0, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: true, revision: o === 2 ? 'r2' : 'r1' }));
    expect(planRollout(roll({ pods: mid, live: { templateHash: 'h2', partition: 1, updateRevision: 'r2', currentRevision: 'r1', statusCurrent: true } }))).toMatchObject({ partition: 1, rolling: true, waiting: 'node 1 to be replaced' });
  });
  it('keeps the partition while the StatefulSet controller has not seen the template', () => {
    expect(planRollout(roll({ live: { templateHash: 'h2', partition: 2, updateRevision: 'r2', statusCurrent: false } }))).toMatchObject({ partition: 2, rolling: true });
  });
});

const ds = (status?: DataStore['status']): DataStore => ({ apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name: 's', namespace: 'n', uid: 'u', generation: 4 }, spec: { nodes: 3 }, ...(status ? { status } : {}) });
const obs = (over: Partial<Observation>): Observation => ({
  desired: 3,
  pods: [0, 1, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: true, ip: `10.0.0.${o + 1}` })),
  nodes: [node(0), node(1), node(2, { s3: { backlogBytes: 5, generation: 1, fenced: false } })],
  now: new Date('2026-01-01T00:00:00Z'),
  ...over,
});

describe('computeStatus', () => {
  it('Running with every node Ready: per-node state, endpoint, selector, conditions with observedGeneration', () => {
    const s = computeStatus(ds(), obs({}));
    expect(s.phase).toBe('Running');
    expect(s.readyNodes).toBe(3);
    expect(s.observedGeneration).toBe(4);
    expect(s.endpoint).toBe('loam://s.n.svc:7480');
    expect(s.selector).toBe('app.kubernetes.io/component=node,app.kubernetes.io/instance=s,app.kubernetes.io/managed-by=loam-operator,app.kubernetes.io/name=loam');
    expect(s.nodes![2]).toEqual({ name: 's-2', ready: true, backend: 3, draining: false, objects: 10, uploadBacklogBytes: 5, endpoint: 'loam://10.0.0.3:7480' });
    expect(s.conditions!.map((c) => [c.type, c.status, c.reason, c.observedGeneration])).toEqual([
      ['Ready', 'True', 'AllNodesReady', 4], ['Progressing', 'False', 'Stable', 4], ['Degraded', 'False', 'AsExpected', 4],
    ]);
  });
  it('keeps lastTransitionTime while a condition keeps its status, moves it on a change', () => {
    const first = computeStatus(ds(), obs({}));
    const again = computeStatus(ds(first), obs({ now: new Date('2026-01-01T01:00:00Z') }));
    expect(again).toEqual(first);
    const down = computeStatus(ds(first), obs({ pods: obs({}).pods.map((p) => (p.ordinal === 1 ? { ...p, ready: false } : p)), now: new Date('2026-01-01T02:00:00Z') }));
    expect(down.phase).toBe('Degraded');
    expect(down.conditions!.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', lastTransitionTime: '2026-01-01T02:00:00Z' });
    expect(down.conditions!.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'NodesNotReady' });
  });
  it('Pending before any node was Ready, Scaling while new nodes join or one drains, Upgrading while rolling', () => {
    expect(computeStatus(ds(), obs({ pods: [], nodes: undefined })).phase).toBe('Pending');
    // A scale-down gated before any node ran, then undone: still Pending.
    const notRunning = obs({ pods: [0, 1, 2].map((o) => ({ name: `s-${o}`, ordinal: o, ready: false, ip: undefined })), nodes: undefined });
    const gated = computeStatus(ds(), { ...notRunning, scalingDown: { pod: 's-2', waiting: 'x' } });
    expect(gated.phase).toBe('Scaling');
    expect(computeStatus(ds(gated), notRunning).phase).toBe('Pending');
    const running = computeStatus(ds(), obs({}));
    const grown = { ...ds(running), spec: { nodes: 5 } };
    expect(computeStatus(grown, obs({ desired: 5 })).phase).toBe('Scaling');
    const draining = computeStatus(ds(running), obs({ scalingDown: { pod: 's-2', objectsLeft: 3, objectsTotal: 9, waiting: 'its drain to finish' } }));
    expect(draining.phase).toBe('Scaling');
    expect(draining.conditions!.find((c) => c.type === 'Progressing')).toMatchObject({ status: 'True', reason: 'Draining' });
    expect(computeStatus(ds(running), obs({ rolling: { updated: 1, replicas: 3 } })).phase).toBe('Upgrading');
    const blind = computeStatus(ds(running), obs({ nodes: undefined }));
    expect(blind.phase).toBe('Degraded');
    expect(blind.conditions!.map((c) => [c.type, c.status, c.reason])).toEqual([['Ready', 'False', 'NodeStatusUnavailable'], ['Progressing', 'False', 'Stable'], ['Degraded', 'True', 'NodeStatusUnavailable']]);
    const lost = obs({ pods: obs({}).pods.map((p) => (p.ordinal === 1 ? { ...p, ready: false, freshVolume: true } : p)), nodes: [node(0), node(2)] });
    expect(computeStatus(ds(running), lost).phase).toBe('Degraded'); // without S3 there is nothing to restore from
    const withS3 = { ...ds(running), spec: { nodes: 3, s3: { bucket: 'b' } } };
    const restoring = computeStatus(withS3, lost);
    expect(restoring.phase).toBe('Restoring');
    expect(restoring.conditions!.find((c) => c.type === 'Progressing')).toMatchObject({ status: 'True', reason: 'RestoringFromS3' });
    expect(restoring.nodes![1]).toMatchObject({ name: 's-1', backend: 2, ready: false });
    expect(computeStatus(ds(running), obs({ error: 'boom' })).conditions!.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'ReconcileError', message: 'boom' });
  });
  it('a member whose Pod is missing keeps its entry and backend if it had joined, so it is down (not joining) and later restoring', () => {
    const members = ['s-0', 's-1', 's-2'];
    const running = computeStatus(ds(), obs({ members }));
    const withS3 = (st: DataStore['status']) => ({ ...ds(st), spec: { nodes: 3, s3: { bucket: 'b' } } });
    // s-1's Pod deleted with its PVC, and not yet made again: down, not a new node joining.
    const gone = computeStatus(withS3(running), obs({ members, pods: obs({}).pods.filter((p) => p.ordinal !== 1), nodes: [node(0), node(2)] }));
    expect(gone.nodes!.map((n) => n.name)).toEqual(members);
    expect(gone.nodes![1]).toEqual({ name: 's-1', ready: false, backend: 2 });
    expect(gone.phase).toBe('Degraded');
    expect(gone.conditions!.find((c) => c.type === 'Progressing')).toMatchObject({ reason: 'NodesRecovering' });
    // Back on a new volume: Restoring, the backend still known.
    const back = computeStatus(withS3(gone), obs({ members, pods: obs({}).pods.map((p) => (p.ordinal === 1 ? { ...p, ready: false, freshVolume: true } : p)), nodes: [node(0), node(2)] }));
    expect(back.phase).toBe('Restoring');
    expect(back.nodes![1]).toMatchObject({ name: 's-1', backend: 2, ready: false });
    // A member that never joined has no entry while its Pod is missing: it is joining.
    const grown = computeStatus({ ...ds(running), spec: { nodes: 4 } }, obs({ desired: 4, members: [...members, 's-3'] }));
    expect(grown.nodes!.map((n) => n.name)).toEqual(members);
    expect(grown.phase).toBe('Scaling');
    // Past the StatefulSet's replicas (scaled down), a missing Pod's entry goes.
    expect(computeStatus(ds(gone), obs({ desired: 1, members: ['s-0'], pods: obs({}).pods.slice(0, 1), nodes: [node(0)] })).nodes!.map((n) => n.name)).toEqual(['s-0']);
  });
});

describe('onNewVolume', () => {
  const pod = (at: string, restarts?: number): PodObj => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 's-1', creationTimestamp: at }, ...(restarts !== undefined ? { status: { containerStatuses: [{ name: 'loam', restartCount: restarts }] } } : {}) });
  const claim = (at: string) => ({ metadata: { creationTimestamp: at } });
  it('a claim no older than its Pod (one-second timestamps) is a new volume, an older one is not', () => {
    expect(onNewVolume(pod('2026-01-01T00:10:00Z'), claim('2026-01-01T00:09:59Z'))).toBe(true);
    expect(onNewVolume(pod('2026-01-01T00:10:00Z', 0), claim('2026-01-01T00:10:00Z'))).toBe(true);
    expect(onNewVolume(pod('2026-01-01T00:10:00Z'), claim('2026-01-01T00:00:00Z'))).toBe(false);
    expect(onNewVolume(undefined, claim('2026-01-01T00:10:00Z'))).toBe(false);
    expect(onNewVolume(pod('2026-01-01T00:10:00Z'), undefined)).toBe(false);
  });
  it('not once the Pod\'s container has restarted: that process has had the volume since its first start', () => {
    expect(onNewVolume(pod('2026-01-01T00:10:00Z', 2), claim('2026-01-01T00:10:00Z'))).toBe(false);
  });
});
