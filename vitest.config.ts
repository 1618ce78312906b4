import { defineConfig } from 'vitest/config';

// One `vitest run` (one summary line for CI) over two projects:
// - core: the SDK, node and cross-package suites;
// - kube: the suites against a real Kubernetes control plane (test/harness/kube.ts), which run
//   after core (groupOrder) so their API servers do not compete for the two cores with the
//   node processes of core's timing-sensitive tests. `npm run test:kube` runs them alone.
// The control plane's tools build cold in ~12-18 min on 2 cores and are cached in
// ~/.cache/loam-tools (test/kube-global-setup.ts builds them before any test's timeout starts).
const KUBE = ['test/kube-harness.test.ts', 'test/kube/**/*.test.ts'];

export default defineConfig({
  test: {
    pool: 'forks',
    // Two cores: more workers than that only makes the node processes under test fight.
    maxWorkers: 2,
    minWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', './test/summary-reporter.ts'],
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'core',
          include: ['sdk/test/**/*.test.ts', 'node/test/**/*.test.ts', 'operator/test/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: ['**/node_modules/**', ...KUBE],
        },
      },
      {
        extends: true,
        test: {
          name: 'kube',
          include: KUBE,
          exclude: ['**/node_modules/**'],
          globalSetup: ['test/global-setup.ts', 'test/kube-global-setup.ts'],
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
