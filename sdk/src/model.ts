import { InvalidArgumentError } from './errors.js';
import { validateClassName } from './limits.js';

/**
 * Base class of every object Loam stores. Subclasses are ordinary classes with ordinary fields;
 * Loam's bookkeeping lives outside the instance (a WeakMap), so `Object.keys(obj)` are exactly
 * the fields that are stored.
 */
export interface PersistentMeta {
  oid?: string;
  version: number;
  loaded: boolean;
  className: string;
  /** Encoded state as last loaded or committed: a commit writes the object only if it differs. */
  snapshot?: Buffer;
  /** The Client or Transaction this instance belongs to (its identity map). */
  owner?: unknown;
  /** The object this one is a version of (newVersion). */
  origin?: string;
}

const metas = new WeakMap<object, PersistentMeta>();

export function metaOf(obj: Persistent): PersistentMeta {
  let m = metas.get(obj);
  if (!m) {
    m = { version: 0, loaded: true, className: classNameOf(obj) };
    metas.set(obj, m);
  }
  return m;
}

export abstract class Persistent {
  /** The object's id once persisted; undefined before. */
  get $oid(): string | undefined {
    return metas.get(this)?.oid;
  }
  /** Version last loaded or committed (0 before the first commit). */
  get $version(): number {
    return metas.get(this)?.version ?? 0;
  }
  /** False for a stub: a referenced object whose fields have not been loaded (`client.load(stub)`). */
  get $loaded(): boolean {
    return metas.get(this)?.loaded ?? true;
  }
  /** The oid of the object this one is a version of (see client.newVersion), if any. */
  get $origin(): string | undefined {
    return metas.get(this)?.origin;
  }
  /** The registered model name this object is stored under. */
  get $className(): string {
    return metaOf(this).className;
  }
}

/**
 * What an object of an unregistered class loads as: its fields, its class name, no methods.
 * Saving it back keeps the class name, so a process without the model cannot corrupt data.
 */
export class GenericObject extends Persistent {
  [field: string]: unknown;
}

type PersistentClass = abstract new (...args: never[]) => Persistent;

const byName = new Map<string, PersistentClass>();
const nameOf = new WeakMap<PersistentClass, string>();

/** Registers `cls` under `name` so any process can decode its objects. */
export function registerModel<T extends PersistentClass>(cls: T, name: string): T {
  validateClassName(name);
  if (typeof cls !== 'function' || !(cls.prototype instanceof Persistent)) {
    throw new InvalidArgumentError(`registerModel(${String(name)}): the class must extend Persistent`);
  }
  const existing = byName.get(name);
  if (existing && existing !== cls) throw new InvalidArgumentError(`model name ${JSON.stringify(name)} is already registered to another class`);
  byName.set(name, cls);
  nameOf.set(cls, name);
  return cls;
}

/**
 * Class decorator: `@model('Employee') class Employee extends Persistent {}`. Works with both
 * TC39 decorators (TypeScript 5 default) and legacy `experimentalDecorators`.
 */
export function model(name: string) {
  return <T extends PersistentClass>(cls: T, _context?: unknown): T => registerModel(cls, name);
}

export function modelClass(name: string): PersistentClass | undefined {
  return byName.get(name);
}

export function classNameOf(obj: Persistent): string {
  if (obj instanceof GenericObject) {
    const m = metas.get(obj);
    if (m) return m.className;
  }
  const name = nameOf.get(obj.constructor as PersistentClass);
  if (name === undefined) {
    throw new InvalidArgumentError(
      `class ${obj.constructor.name} is not a registered model: decorate it with @model('Name') or call registerModel(${obj.constructor.name}, 'Name')`,
    );
  }
  return name;
}

/** Makes an instance of the model registered as `className` (a GenericObject if none) without running its constructor. */
export function instantiate(className: string, meta: PersistentMeta): Persistent {
  const cls = byName.get(className);
  const obj = Object.create((cls ?? GenericObject).prototype) as Persistent;
  metas.set(obj, meta);
  return obj;
}

export function setMeta(obj: Persistent, meta: PersistentMeta): void {
  metas.set(obj, meta);
}

/** Own enumerable string-keyed fields: exactly what is stored. */
export function fieldsOf(obj: Persistent): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(obj)) out[k] = (obj as unknown as Record<string, unknown>)[k];
  return out;
}

/** Replaces the instance's fields with `fields` (keeps identity: references to it stay valid). */
export function assignFields(obj: Persistent, fields: Record<string, unknown>): void {
  const target = obj as unknown as Record<string, unknown>;
  for (const k of Object.keys(target)) if (!(k in fields)) delete target[k];
  for (const k of Object.keys(fields)) target[k] = fields[k];
}
