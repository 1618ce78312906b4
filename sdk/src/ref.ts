import { InvalidArgumentError } from './errors.js';
import { isOid } from './oid.js';

/**
 * A small serializable reference to a stored object: `loam://host:port/dataset/oid`. Pass its
 * string between processes (task queues, messages, environment) and `client.resolve()` it later.
 */
export class Ref {
  readonly host: string;
  readonly port: number;
  readonly dataset: string;
  readonly oid: string;

  constructor(host: string, port: number, dataset: string, oid: string) {
    this.host = host;
    this.port = port;
    this.dataset = dataset;
    this.oid = oid;
  }

  toString(): string {
    return `loam://${this.host}:${this.port}/${this.dataset}/${this.oid}`;
  }

  toJSON(): string {
    return this.toString();
  }

  static parse(value: string | Ref): Ref {
    if (value instanceof Ref) return value;
    if (typeof value !== 'string') throw new InvalidArgumentError(`a ref is a string like loam://host:port/dataset/oid, got ${typeof value}`);
    const m = /^loam:\/\/(\[[0-9a-fA-F:]+\]|[^/:\s]+):(\d{1,5})\/([^/\s]+)\/([^/\s]+)$/.exec(value);
    if (!m || Number(m[2]) > 65535) throw new InvalidArgumentError(`malformed ref ${JSON.stringify(value.slice(0, 200))}: expected loam://host:port/dataset/oid`);
    if (!isOid(m[4])) throw new InvalidArgumentError(`malformed ref ${JSON.stringify(value.slice(0, 200))}: ${JSON.stringify(m[4])} is not an oid`);
    return new Ref(m[1], Number(m[2]), m[3], m[4]);
  }
}

export interface Endpoint {
  host: string;
  port: number;
  dataset: string;
}

export const DEFAULT_URL = 'loam://127.0.0.1:7480/default';

/** Parses `loam://host:port[/dataset]`. */
export function parseUrl(url: string): Endpoint {
  const m = /^loam:\/\/(\[[0-9a-fA-F:]+\]|[^/:\s]+)(?::(\d{1,5}))?(?:\/([^/\s]*))?\/?$/.exec(url ?? '');
  if (!m) throw new InvalidArgumentError(`malformed Loam URL ${JSON.stringify(url)}: expected loam://host:port/dataset`);
  const port = m[2] === undefined ? 7480 : Number(m[2]);
  if (port < 1 || port > 65535) throw new InvalidArgumentError(`malformed Loam URL ${JSON.stringify(url)}: bad port`);
  return { host: m[1], port, dataset: m[3] || 'default' };
}
