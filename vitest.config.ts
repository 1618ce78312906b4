import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['sdk/test/**/*.test.ts', 'node/test/**/*.test.ts', 'operator/test/**/*.test.ts', 'test/**/*.test.ts'],
    // The Kubernetes control plane (test/harness/kube.ts) takes ~12-18 min to build cold on a
    // 2-core machine: its harness test and the tests against the API server (test/kube/) run on
    // demand (`npm run test:kube`, vitest.kube.config.ts) rather than in every `npm test`.
    exclude: ['**/node_modules/**', 'test/kube-harness.test.ts', 'test/kube/**'],
    pool: 'forks',
    // Two cores: more workers than that only makes the node processes under test fight.
    maxWorkers: 2,
    minWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', './test/summary-reporter.ts'],
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
  },
});
