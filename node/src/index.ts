export { LoamNode, type NodeOptions } from './server.js';
export { Engine, type EngineOptions, type CommitInput, type StoredObject } from './storage/engine.js';
export { createLogger } from './logger.js';
