import { defineConfig, mergeConfig } from 'vitest/config';
import base from './vitest.config.js';

// `npm run test:kube`: the Kubernetes harness test alone (it builds the control plane first).
export default mergeConfig(base, defineConfig({ test: { include: ['test/kube-harness.test.ts'], exclude: ['**/node_modules/**'] } }));
