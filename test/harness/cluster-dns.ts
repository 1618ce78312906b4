/**
 * The kubelet harness's cluster DNS, as a hosts file: what a Pod's /etc/hosts holds so that the
 * names CoreDNS would answer resolve without a DNS server (kubelet.ts bind-mounts it over
 * /etc/hosts in the Pod process's own mount namespace; glibc and Go's resolver both read it first).
 * A pure function of the API objects, so the naming rules can be checked without processes.
 *
 * Endpoints are computed here from the Pods, as the EndpointSlice controller would: the API server
 * rejects loopback addresses in EndpointSlices (and Endpoints), so with the harness's 127.0.0.x Pod
 * IPs the controller's slices stay empty. A Service with a selector has as endpoints the Pods of its
 * namespace that match it and have an IP, are not finished (Succeeded/Failed), and are Ready and not
 * terminating, or any of them with `publishNotReadyAddresses`; a Service without a selector has
 * those of its own EndpointSlices (made by hand, so not loopback).
 *
 * Records, as CoreDNS's kubernetes plugin serves them (cluster domain `cluster.local`):
 * - `<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.svc` → the addresses of the Service's endpoints.
 *   A headless Service does this in a real cluster too; a ClusterIP Service would resolve to its
 *   virtual IP, but there is no kube-proxy here, so its name maps to its endpoints' Pod IPs (the
 *   deviation: a client reaches a Pod on the Service's `port`, so `port` and `targetPort` must be
 *   equal, and it sees several addresses rather than one that balances);
 * - `<hostname>.<svc>.<ns>.svc(.cluster.local)` → that Pod's address, for a headless Service and an
 *   endpoint Pod whose spec.hostname is set and spec.subdomain names the Service (StatefulSet Pods);
 * - the search-path forms a Pod's resolv.conf would complete (`<svc>.<ns>`, and `<svc>` in the
 *   Pod's own namespace), so short names work as they do in a Pod;
 * - what a kubelet writes into a Pod's own /etc/hosts: its IP with `<hostname>.<subdomain>.<ns>.svc.cluster.local`
 *   and `<hostname>`, and spec.hostAliases.
 * ExternalName Services (a CNAME) and IPv6 addresses have no record.
 */

export const CLUSTER_DOMAIN = 'cluster.local';

export interface DnsService {
  metadata: { name: string; namespace?: string };
  spec?: { type?: string; clusterIP?: string; publishNotReadyAddresses?: boolean; selector?: Record<string, string> | null };
}

/** A Pod as the API has it (any Pod of the cluster, not only the harness's own). */
export interface DnsPodObject {
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: { hostname?: string; subdomain?: string };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

export interface DnsEndpointSlice {
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  addressType?: string;
  endpoints?: { addresses: string[]; hostname?: string; conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean } }[] | null;
}

export interface DnsPod {
  namespace: string;
  name: string;
  ip: string;
  hostname?: string;
  subdomain?: string;
  hostAliases?: { ip: string; hostnames?: string[] }[];
}

export interface HostsInput {
  /** The machine's own hosts file (its localhost lines stay). */
  base: string;
  services: DnsService[];
  pods: DnsPodObject[];
  endpointSlices: DnsEndpointSlice[];
  /** The Pod the file is for: its own lines, and the namespace short names are relative to. */
  pod?: DnsPod;
  /** Whether cluster records go in (dnsPolicy ClusterFirst); the Pod's own lines always do. */
  cluster?: boolean;
}

const SERVICE_LABEL = 'kubernetes.io/service-name';

/** name → addresses (sorted, unique), the cluster's records in their full `.svc.cluster.local` form. */
export function clusterRecords(services: DnsService[], pods: DnsPodObject[], slices: DnsEndpointSlice[]): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  const add = (name: string, ip: string) => {
    let s = out.get(name);
    if (!s) out.set(name, (s = new Set()));
    s.add(ip);
  };
  const IPV4 = /^\d+\.\d+\.\d+\.\d+$/;
  for (const svc of services) {
    if (svc.spec?.type === 'ExternalName') continue;
    const ns = svc.metadata.namespace ?? 'default';
    const name = svc.metadata.name;
    const headless = svc.spec?.clusterIP === 'None';
    const all = svc.spec?.publishNotReadyAddresses === true;
    const fqdn = `${name}.${ns}.svc.${CLUSTER_DOMAIN}`;
    const selector = svc.spec?.selector;
    if (selector && Object.keys(selector).length) {
      for (const p of pods) {
        const ip = p.status?.podIP;
        if ((p.metadata.namespace ?? 'default') !== ns || !ip || !IPV4.test(ip)) continue;
        if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') continue;
        if (!Object.entries(selector).every(([k, v]) => p.metadata.labels?.[k] === v)) continue;
        const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true && !p.metadata.deletionTimestamp;
        if (!all && !ready) continue;
        add(fqdn, ip);
        if (headless && p.spec?.hostname && p.spec.subdomain === name) add(`${p.spec.hostname}.${fqdn}`, ip);
      }
      continue;
    }
    for (const sl of slices) {
      if ((sl.metadata.namespace ?? 'default') !== ns || sl.metadata.labels?.[SERVICE_LABEL] !== name || (sl.addressType ?? 'IPv4') !== 'IPv4') continue;
      for (const ep of sl.endpoints ?? []) {
        // An unset ready condition means ready (the EndpointSlice API's rule).
        if (!all && ep.conditions?.ready === false) continue;
        for (const ip of ep.addresses) {
          add(fqdn, ip);
          if (headless && ep.hostname) add(`${ep.hostname}.${fqdn}`, ip);
        }
      }
    }
  }
  const byIp = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });
  return new Map([...out].sort(([a], [b]) => a.localeCompare(b)).map(([n, ips]) => [n, [...ips].sort(byIp)]));
}

/** The names a Pod in `ns` resolves to the record `fqdn` (`x.<ns2>.svc.cluster.local`): the full forms first. */
function aliases(fqdn: string, ns: string | undefined): string[] {
  const svc = fqdn.slice(0, -`.${CLUSTER_DOMAIN}`.length); // x.<ns2>.svc
  const rel = svc.slice(0, -'.svc'.length); // x.<ns2>
  const names = [fqdn, svc, rel];
  if (ns !== undefined && rel.endsWith(`.${ns}`)) names.push(rel.slice(0, -ns.length - 1));
  return names;
}

/** The whole hosts file (deterministic: the same objects give the same bytes). */
export function hostsFile(input: HostsInput): string {
  const lines: string[] = [];
  const base = input.base.endsWith('\n') || input.base === '' ? input.base : `${input.base}\n`;
  lines.push('# Kubernetes-managed hosts file (kubelet harness: cluster DNS as a hosts file, see test/harness/cluster-dns.ts).');
  const p = input.pod;
  if (p) {
    const hostname = p.hostname || p.name;
    lines.push(p.subdomain ? `${p.ip}\t${hostname}.${p.subdomain}.${p.namespace}.svc.${CLUSTER_DOMAIN}\t${hostname}` : `${p.ip}\t${hostname}`);
    for (const a of p.hostAliases ?? []) if (a.hostnames?.length) lines.push(`${a.ip}\t${a.hostnames.join('\t')}`);
  }
  if (input.cluster !== false) {
    for (const [name, ips] of clusterRecords(input.services, input.pods, input.endpointSlices)) {
      const names = aliases(name, p?.namespace).join('\t');
      for (const ip of ips) lines.push(`${ip}\t${names}`);
    }
  }
  return `${base}${lines.join('\n')}\n`;
}
