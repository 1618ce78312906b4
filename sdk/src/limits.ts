import { InvalidArgumentError, LimitExceededError } from './errors.js';

/** Limits a node enforces; defaults here, announced to clients in Hello (except maxDepth). */
export interface Limits {
  maxObjectBytes: number;
  maxBatchObjects: number;
  maxBatchBytes: number;
  maxAliasLength: number;
  /**
   * How deeply containers (objects, arrays, Maps, Sets, an Error's cause) may nest in an
   * object's state; the object's own fields are level 1. A property of the codec, the same in
   * SDK and node, so not announced: the codec recurses, and deeper values would overflow the
   * stack (nested Sets from about 700 levels, objects from about 1,200).
   */
  maxDepth: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxObjectBytes: 4 * 1024 * 1024,
  maxBatchObjects: 100_000,
  maxBatchBytes: 64 * 1024 * 1024,
  maxAliasLength: 256,
  maxDepth: 512,
});

/** Class names are what `@model(name)` registers; kept short because every record stores one. */
export const MAX_CLASS_NAME_LENGTH = 128;
export const MAX_DATASET_NAME_LENGTH = 63;

const ALIAS_RE = /^[A-Za-z0-9._:@\-][A-Za-z0-9._:@\/\-]*$/;
const DATASET_RE = /^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/;
const CLASS_RE = /^[A-Za-z_$][A-Za-z0-9_$.:-]*$/;

export function validateAlias(alias: unknown, limits: Limits = DEFAULT_LIMITS): string {
  if (typeof alias !== 'string' || alias.length === 0) {
    throw new InvalidArgumentError(`alias must be a non-empty string, got ${JSON.stringify(alias)}`);
  }
  if (alias.length > limits.maxAliasLength) {
    throw new LimitExceededError(`alias is ${alias.length} characters, the limit is ${limits.maxAliasLength}`, {
      limit: 'maxAliasLength',
    });
  }
  if (!ALIAS_RE.test(alias)) {
    throw new InvalidArgumentError(
      `alias ${JSON.stringify(alias)} has characters outside [A-Za-z0-9._:@/-] or starts with '/'`,
      { alias },
    );
  }
  return alias;
}

export function validateDatasetName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_DATASET_NAME_LENGTH || !DATASET_RE.test(name)) {
    throw new InvalidArgumentError(
      `dataset name ${JSON.stringify(name)} is invalid: 1-${MAX_DATASET_NAME_LENGTH} of [a-z0-9._-], starting and ending with a letter or digit`,
    );
  }
  return name;
}

export function validateClassName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_CLASS_NAME_LENGTH || !CLASS_RE.test(name)) {
    throw new InvalidArgumentError(`class name ${JSON.stringify(name)} is invalid (1-${MAX_CLASS_NAME_LENGTH} identifier characters)`);
  }
  return name;
}
