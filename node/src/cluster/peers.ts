import { credentials, Metadata } from '@grpc/grpc-js';
import {
  NodeServiceClient, StoreServiceClient, UnavailableError, callUnary, type UnaryMethod,
  type AdoptHomeRequest, type ReturnHomeRequest, type FinishRequest, type InstallRequest, type MoveRequest, type MoveResponse, type PrepareRequest,
  type PrepareResponse, type SetMasterRequest, type GetRequest, type GetResponse, type InstallReplicasRequest, type DropReplicasRequest, type SetHomeReplicasRequest,
  type ReleaseReplicasRequest, type ConfirmReplicasRequest, type ConfirmReplicasResponse, type ReleaseReplicasResponse,
  type ActivateInstallRequest, type InstallStatusRequest, type InstallStatusResponse, deadlineMetadata,
} from '@loam/sdk/wire';
import { PeerLink, type LinkCalls } from './peer-link.js';
import { peerCallError, type ClusterSecret } from './peer-auth.js';

/** Who a node-to-node call goes to: a member record (its `peerAddress` is where NodeService listens). */
export interface PeerTarget {
  number: number;
  /** The client address (StoreService). */
  address: string;
  /** The peer address (NodeService); missing in a member record written by an older loam. */
  peerAddress?: string;
}

/**
 * Requests carrying more object bytes than this go as their own unary call, so a bulk copy does
 * not hold up the small messages queued behind it on the shared Link stream.
 */
const LINK_MAX_BYTES = 1024 * 1024;

/**
 * Connections from this node to the other nodes of its cluster: one channel per peer address,
 * and on it one Link stream for the frequent small calls (transaction parts, replica updates).
 * Every call on those channels carries the cluster secret. Get and Move go to the other node's
 * client port (StoreService), like any client's.
 */
export class Peers {
  private readonly nodes = new Map<string, NodeServiceClient>();
  private readonly links = new Map<string, PeerLink>();
  private readonly stores = new Map<string, StoreServiceClient>();

  constructor(private readonly secret: ClusterSecret, private readonly deadlineMs = 30_000, private readonly maxMessageBytes = 128 * 1024 * 1024) {}

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

  /**
   * The peer address of `to`. A member record without one (an older loam wrote it) makes the
   * node unreachable for node-to-node calls, with an error that says why.
   */
  private peerAddress(to: PeerTarget): string {
    if (!to.peerAddress) {
      throw new UnavailableError(`node ${to.number} (${to.address}) has no peer address in its member record (an older loam registered it): node-to-node calls to it are not possible`, { node: to.number });
    }
    return to.peerAddress;
  }

  private node(address: string): NodeServiceClient {
    let c = this.nodes.get(address);
    if (!c) this.nodes.set(address, (c = new NodeServiceClient(address, credentials.createInsecure(), { ...this.opts(), interceptors: [this.secret.clientInterceptor()] })));
    return c;
  }

  private link(address: string): PeerLink {
    let l = this.links.get(address);
    if (!l) this.links.set(address, (l = new PeerLink(this.node(address), address, this.deadlineMs)));
    return l;
  }

  /** A unary NodeService call to `to`; a refused secret comes back as an UnavailableError saying so. */
  private async nodeCall<Req, Res>(to: PeerTarget, pick: (c: NodeServiceClient) => UnaryMethod<Req, Res>, req: Req, deadlineMs = this.deadlineMs): Promise<Res> {
    const address = this.peerAddress(to);
    const c = this.node(address);
    const fn = pick(c);
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + deadlineMs;
      fn.call(c, req, deadlineMetadata(deadline), { deadline }, (err, res) => (err ? reject(peerCallError(err, address)) : resolve(res)));
    });
  }

  private async linkCall<K extends keyof LinkCalls>(to: PeerTarget, kind: K, req: LinkCalls[K][0], deadlineMs = this.deadlineMs): Promise<LinkCalls[K][1]> {
    return this.link(this.peerAddress(to)).call(kind, req, deadlineMs);
  }

  private store(address: string): StoreServiceClient {
    let c = this.stores.get(address);
    if (!c) this.stores.set(address, (c = new StoreServiceClient(address, credentials.createInsecure(), this.opts())));
    return c;
  }

  private call<Req, Res>(client: object, fn: UnaryMethod<Req, Res>, req: Req): Promise<Res> {
    return callUnary(client, fn, req, this.deadlineMs);
  }

  install(to: PeerTarget, req: InstallRequest): Promise<unknown> {
    return this.nodeCall(to, (c) => c.install, req);
  }

  activateInstall(to: PeerTarget, req: ActivateInstallRequest): Promise<unknown> {
    return this.nodeCall(to, (c) => c.activateInstall, req);
  }

  installStatus(to: PeerTarget, req: InstallStatusRequest): Promise<InstallStatusResponse> {
    return this.nodeCall(to, (c) => c.installStatus, req);
  }

  setMaster(to: PeerTarget, req: SetMasterRequest): Promise<unknown> {
    return this.nodeCall(to, (c) => c.setMaster, req);
  }

  adoptHome(to: PeerTarget, req: AdoptHomeRequest): Promise<unknown> {
    return this.nodeCall(to, (c) => c.adoptHome, req);
  }

  returnHome(to: PeerTarget, req: ReturnHomeRequest): Promise<unknown> {
    return this.nodeCall(to, (c) => c.returnHome, req);
  }

  /**
   * A call that can go on the Link: there unless it carries more than LINK_MAX_BYTES of object
   * state, then as its own unary call.
   */
  private linkOrUnary<K extends 'prepare' | 'installReplicas'>(to: PeerTarget, kind: K, req: LinkCalls[K][0], stateBytes: number, deadlineMs = this.deadlineMs): Promise<LinkCalls[K][1]> {
    if (stateBytes <= LINK_MAX_BYTES) return this.linkCall(to, kind, req, deadlineMs);
    return this.nodeCall(to, (c) => c[kind] as UnaryMethod<LinkCalls[K][0], LinkCalls[K][1]>, req, deadlineMs);
  }

  /** `timeoutMs` shortens the usual deadline (the client's own deadline is nearer). */
  prepare(to: PeerTarget, req: PrepareRequest, timeoutMs?: number): Promise<PrepareResponse> {
    const bytes = (req.ops?.writes ?? []).reduce((n, w) => n + w.state.length, 0);
    return this.linkOrUnary(to, 'prepare', req, bytes, Math.min(timeoutMs ?? this.deadlineMs, this.deadlineMs));
  }

  finish(to: PeerTarget, req: FinishRequest): Promise<unknown> {
    return this.linkCall(to, 'finish', req);
  }

  installReplicas(to: PeerTarget, req: InstallReplicasRequest): Promise<unknown> {
    return this.linkOrUnary(to, 'installReplicas', req, req.objects.reduce((n, o) => n + o.state.length, 0));
  }

  dropReplicas(to: PeerTarget, req: DropReplicasRequest): Promise<unknown> {
    return this.linkCall(to, 'dropReplicas', req);
  }

  confirmReplicas(to: PeerTarget, req: ConfirmReplicasRequest): Promise<ConfirmReplicasResponse> {
    return this.nodeCall(to, (c) => c.confirmReplicas, req);
  }

  releaseReplicas(to: PeerTarget, req: ReleaseReplicasRequest): Promise<ReleaseReplicasResponse> {
    return this.nodeCall(to, (c) => c.releaseReplicas, req);
  }

  setHomeReplicas(to: PeerTarget, req: SetHomeReplicasRequest): Promise<unknown> {
    return this.nodeCall(to, (c) => c.setHomeReplicas, req);
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
