import { describe, expect, it } from 'vitest';
import { planFaults } from './nemesis.js';

describe('the fault schedule', () => {
  it('draws the same schedule from the same seed, each kind once per round', () => {
    const all = ['kill', 'pause', 'etcd-kill', 'failpoint', 'move'] as const;
    const a = planFaults(7, all, ['participant-before-commit'], [100, 200], 10);
    expect(planFaults(7, all, ['participant-before-commit'], [100, 200], 10)).toEqual(a);
    expect(planFaults(8, all, ['participant-before-commit'], [100, 200], 10)).not.toEqual(a);
    expect(new Set(a.slice(0, 5).map((f) => f.kind)).size).toBe(5);
    for (const f of a) expect(f.pauseMs).toBeGreaterThan(3000);
    // a drain happens at most once (a drained node takes no objects until it restarts)
    const d = planFaults(3, ['drain', 'move'], [], [1, 2], 8);
    expect(d.filter((f) => f.kind === 'drain')).toHaveLength(1);
  });
});
