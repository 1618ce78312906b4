import { afterAll } from 'vitest';
import { cleanupAll } from './harness/node-process.js';
import { cleanupEtcd } from './harness/etcd.js';
import { cleanupS3 } from './harness/s3-server.js';
import { cleanupKube } from './harness/kube.js';
import { cleanupKubelet } from './harness/kubelet.js';

// Whatever a test file started or created is gone when the file ends, even if a test failed.
afterAll(cleanupAll);
afterAll(cleanupEtcd);
afterAll(cleanupS3);
afterAll(cleanupKube);
// Registered last, so it runs first (after-hooks run in reverse order): Pod processes go before the cluster.
afterAll(cleanupKubelet);
