import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

// `npm run test:kube`: the Kubernetes harness test and the tests against the API server in
// test/kube/ (each file builds or finds the control plane first, then starts its own).
// Not mergeConfig: it would append to `include` and `exclude` instead of replacing them.
export default defineConfig({ test: { ...base.test, include: ['test/kube-harness.test.ts', 'test/kube/**/*.test.ts'], exclude: ['**/node_modules/**'] } });
