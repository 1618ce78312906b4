import { afterAll } from 'vitest';
import { cleanupAll } from './harness/node-process.js';
import { cleanupEtcd } from './harness/etcd.js';
import { cleanupKube } from './harness/kube.js';

// Whatever a test file started or created is gone when the file ends, even if a test failed.
afterAll(cleanupAll);
afterAll(cleanupEtcd);
afterAll(cleanupKube);
