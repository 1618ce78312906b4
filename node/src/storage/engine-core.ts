import type { Limits } from '@loam/sdk/wire';
import type { EngineState } from './engine-state.js';
import type { LogRecord } from './record.js';

/** What the engine's parts (placement records, two-phase participant) share with it. */
export interface EngineCore {
  readonly state: EngineState;
  readonly limits: Limits;
  /** Dataset id of a name; a typed error for an unknown one. */
  datasetId(name: string): number;
  /** Appends records as one batch; resolves with where each landed once durable. */
  append(records: LogRecord[]): Promise<{ segment: number; offsets: number[]; sizes: number[] }>;
  /** Appends node-internal records and applies them once durable (their keys marked pending meanwhile). */
  appendAndApply(records: LogRecord[]): Promise<void>;
}
