import { credentials } from '@grpc/grpc-js';
import {
  NodeServiceClient, StoreServiceClient, callUnary, type UnaryMethod,
  type AdoptHomeRequest, type FinishRequest, type InstallRequest, type MoveRequest, type MoveResponse, type PrepareRequest,
  type PrepareResponse, type SetMasterRequest, type GetRequest, type GetResponse, type InstallReplicasRequest, type DropReplicasRequest, type SetHomeReplicasRequest,
  type ReleaseReplicasRequest, type ReleaseReplicasResponse,
} from '@loam/sdk/wire';
import { PeerLink, type LinkCalls } from './peer-link.js';

/**
 * Requests carrying more object bytes than this go as their own unary call, so a bulk copy does
 * not hold up the small messages queued behind it on the shared Link stream.
 */
const LINK_MAX_BYTES = 1024 * 1024;

/**
 * Connections from this node to the other nodes of its cluster: one channel per address, and on
 * it one Link stream for the frequent small calls (transaction parts, replica updates).
 */
export class Peers {
  private readonly nodes = new Map<string, NodeServiceClient>();
  private readonly links = new Map<string, PeerLink>();
  private readonly stores = new Map<string, StoreServiceClient>();

  constructor(private readonly deadlineMs = 30_000, private readonly maxMessageBytes = 128 * 1024 * 1024) {}

  private opts() {
    return {
      'grpc.max_receive_message_length': this.maxMessageBytes,
      'grpc.max_send_message_length': this.maxMessageBytes,
      // A connection that died without a reset (a node's host gone, a dropped route) would hold
      // the Link stream, and every call on it, until their deadlines: pings find it in seconds.
      // (grpc-js servers accept pings at any rate.)
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      // grpc-js backs off up to 120 s by default: a restarted peer would stay unreachable that long.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
    };
  }

  private node(address: string): NodeServiceClient {
    let c = this.nodes.get(address);
    if (!c) this.nodes.set(address, (c = new NodeServiceClient(address, credentials.createInsecure(), this.opts())));
    return c;
  }

  private link(address: string): PeerLink {
    let l = this.links.get(address);
    if (!l) this.links.set(address, (l = new PeerLink(this.node(address), address, this.deadlineMs)));
    return l;
  }

  private store(address: string): StoreServiceClient {
    let c = this.stores.get(address);
    if (!c) this.stores.set(address, (c = new StoreServiceClient(address, credentials.createInsecure(), this.opts())));
    return c;
  }

  private call<Req, Res>(client: object, fn: UnaryMethod<Req, Res>, req: Req): Promise<Res> {
    return callUnary(client, fn, req, this.deadlineMs);
  }

  install(address: string, req: InstallRequest): Promise<unknown> {
    const c = this.node(address);
    return this.call(c, c.install, req);
  }

  setMaster(address: string, req: SetMasterRequest): Promise<unknown> {
    const c = this.node(address);
    return this.call(c, c.setMaster, req);
  }

  adoptHome(address: string, req: AdoptHomeRequest): Promise<unknown> {
    const c = this.node(address);
    return this.call(c, c.adoptHome, req);
  }

  /**
   * A call that can go on the Link: there unless it carries more than LINK_MAX_BYTES of object
   * state, then as its own unary call.
   */
  private linkOrUnary<K extends 'prepare' | 'installReplicas'>(address: string, kind: K, req: LinkCalls[K][0], stateBytes: number, deadlineMs = this.deadlineMs): Promise<LinkCalls[K][1]> {
    if (stateBytes <= LINK_MAX_BYTES) return this.link(address).call(kind, req, deadlineMs);
    const c = this.node(address);
    return callUnary(c, c[kind] as UnaryMethod<LinkCalls[K][0], LinkCalls[K][1]>, req, deadlineMs);
  }

  /** `timeoutMs` shortens the usual deadline (the client's own deadline is nearer). */
  prepare(address: string, req: PrepareRequest, timeoutMs?: number): Promise<PrepareResponse> {
    const bytes = (req.ops?.writes ?? []).reduce((n, w) => n + w.state.length, 0);
    return this.linkOrUnary(address, 'prepare', req, bytes, Math.min(timeoutMs ?? this.deadlineMs, this.deadlineMs));
  }

  finish(address: string, req: FinishRequest): Promise<unknown> {
    return this.link(address).call('finish', req);
  }

  installReplicas(address: string, req: InstallReplicasRequest): Promise<unknown> {
    return this.linkOrUnary(address, 'installReplicas', req, req.objects.reduce((n, o) => n + o.state.length, 0));
  }

  dropReplicas(address: string, req: DropReplicasRequest): Promise<unknown> {
    return this.link(address).call('dropReplicas', req);
  }

  releaseReplicas(address: string, req: ReleaseReplicasRequest): Promise<ReleaseReplicasResponse> {
    const c = this.node(address);
    return this.call(c, c.releaseReplicas, req);
  }

  setHomeReplicas(address: string, req: SetHomeReplicasRequest): Promise<unknown> {
    const c = this.node(address);
    return this.call(c, c.setHomeReplicas, req);
  }

  get(address: string, req: GetRequest): Promise<GetResponse> {
    const c = this.store(address);
    return this.call(c, c.get, req);
  }

  move(address: string, req: MoveRequest): Promise<MoveResponse> {
    const c = this.store(address);
    return this.call(c, c.move, req);
  }

  close(): void {
    for (const l of this.links.values()) l.close();
    this.links.clear();
    for (const c of this.nodes.values()) c.close();
    for (const c of this.stores.values()) c.close();
    this.nodes.clear();
    this.stores.clear();
  }
}
