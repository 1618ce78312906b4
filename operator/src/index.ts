export * from './crd/apiextensions.js';
export * from './crd/types.js';
export * from './crd/datastore.js';
export { CRDS, crdYaml, crdFiles } from './crd/render.js';
export { completeDataStore } from './crd/complete-sample.js';
export { LoamNodeAdmin, DrainNotStartedError, type LoamNodeAdminOptions } from './admin/node-admin.js';
