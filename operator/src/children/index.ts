/** Every child of a DataStore, as pure functions of it (and of what the reconcile decided). */
export * from './labels.js';
export * from './quantity.js';
export * from './config-map.js';
export * from './services.js';
export * from './statefulset.js';
export * from './pdb.js';
export * from './service-account.js';
export * from './cluster-secret.js';
export * from './managed-etcd.js';
