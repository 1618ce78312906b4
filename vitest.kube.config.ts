import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

// `npm run test:kube`: the Kubernetes harness test and the tests under test/kube/ (they build the control plane first).
// Not mergeConfig: it would append to `include` and `exclude` instead of replacing them.
export default defineConfig({ test: { ...base.test, include: ['test/kube-harness.test.ts', 'test/kube/**/*.test.ts'], exclude: ['**/node_modules/**'] } });
