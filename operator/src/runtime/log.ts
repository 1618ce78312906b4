/** The runtime's logger: the contract's (pino's shape: an object, then a message), plus debug. */
import type { ReconcileContext } from '../controller/contract.js';

export type RuntimeLog = ReconcileContext['log'] & { debug?(obj: object, msg: string): void };

/** Logs nothing (tests and library use without a logger). */
export const silentLog: RuntimeLog = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };
