//! The agent's REST API in types: request and response bodies shared by
//! pilusd, the `pilus` CLI and the CNI plugin. Paths are listed in
//! [`paths`]; every error body is `{"error": "..."}`.
//!
//! Only serde and serde_json: the CNI plugin links this crate, and it must
//! not pull the policy engine, YAML or the packet parser in with it. Where
//! an answer is computed by another crate (a policy trace), the wire form is
//! written out here and the agent converts into it.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The API's paths, relative to the socket.
pub mod paths {
    pub const STATUS: &str = "/v1/status";
    /// GET list, PUT create; `/v1/endpoints/{key}` GET, DELETE, where key
    /// is an id, an IP, a container id or `namespace/pod`; with
    /// `?ifname=X` the key is a container id and X picks its attachment.
    pub const ENDPOINTS: &str = "/v1/endpoints";
    /// GET list; `/v1/identities/{id}` GET.
    pub const IDENTITIES: &str = "/v1/identities";
    /// GET list, POST import, DELETE `?all=true`; `/v1/policies/{name}`
    /// GET, DELETE.
    pub const POLICIES: &str = "/v1/policies";
    /// GET `?wait=N&timeout_ms=T`: the enforced revision.
    pub const REVISION: &str = "/v1/policy/revision";
    /// POST a [`super::TraceRequest`].
    pub const TRACE: &str = "/v1/policy/trace";
    /// GET list; `/v1/namespaces/{ns}/labels` PUT.
    pub const NAMESPACES: &str = "/v1/namespaces";
    /// `/v1/bpf/policy/{endpoint}` GET.
    pub const BPF_POLICY: &str = "/v1/bpf/policy";
    pub const BPF_IPCACHE: &str = "/v1/bpf/ipcache";
    /// GET: the ipcache with every entry's sources.
    pub const IPCACHE: &str = "/v1/ipcache";
    /// GET: the cluster's nodes as this node knows them (empty when it is
    /// on its own).
    pub const NODES: &str = "/v1/nodes";
    /// GET list of the endpoint map.
    pub const BPF_ENDPOINTS: &str = "/v1/bpf/endpoints";
    /// GET list, DELETE flush.
    pub const BPF_CT: &str = "/v1/bpf/ct";
    /// POST a [`super::CniGc`]: CNI GC, done whole under the agent's lock.
    pub const CNI_GC: &str = "/v1/cni/gc";
    /// GET `?since=SEQ&wait_ms=N&type=T[,T...]&from=EP&to=EP&related_to=EP&last=N`:
    /// datapath events, a [`super::MonitorBatch`]. `type`: drop, trace,
    /// policy-verdict, debug, capture (default: all); the endpoint filters
    /// take comma-separated endpoint ids.
    pub const MONITOR: &str = "/v1/monitor";
    /// GET the monitor's settings ([`super::MonitorConfig`]); PUT (or
    /// POST) a [`super::MonitorConfigUpdate`] to change them live.
    pub const MONITOR_CONFIG: &str = "/v1/monitor/config";
    /// GET list, PUT upsert a [`super::Service`]; `/v1/services/{ns}/{name}`
    /// GET, DELETE. No route deletes every service.
    pub const SERVICES: &str = "/v1/services";
    /// POST a [`super::ServiceImport`]: Kubernetes Service and EndpointSlice
    /// documents, all or nothing.
    pub const SERVICES_IMPORT: &str = "/v1/services/import";
    /// GET: the service maps decoded, per frontend.
    pub const BPF_LB: &str = "/v1/bpf/lb";
    /// GET: conntrack table and GC state, a [`super::ConntrackStatus`].
    pub const CONNTRACK: &str = "/v1/conntrack";
    /// GET: `pilus doctor`, a [`super::DoctorReport`] of this node.
    pub const DOCTOR: &str = "/v1/doctor";
    /// GET the XDP prefilter's deny list ([`super::PrefilterList`]); POST a
    /// [`super::PrefilterChange`] adds its CIDRs, all or none.
    pub const PREFILTER: &str = "/v1/prefilter";
    /// POST a [`super::PrefilterChange`]: removes its CIDRs, all or none.
    pub const PREFILTER_DELETE: &str = "/v1/prefilter/delete";
    /// GET: flow records (`pilus observe`), a [`super::FlowBatch`]: this
    /// node's, or with `nodes=all` every node's (the agent asks its peers).
    pub const FLOWS: &str = "/v1/flows";

    /// POST a [`super::PacketTraceRequest`]: `pilus trace`, a packet run
    /// through the loaded programs on a private copy of the state it
    /// writes; a [`super::PacketTrace`].
    pub const PACKET_TRACE: &str = "/v1/trace";
}

/// CIDRs to add to or remove from the XDP prefilter's deny list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrefilterChange {
    pub cidrs: Vec<String>,
}

/// The XDP prefilter: where it runs and what it denies.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrefilterList {
    /// The uplink it is attached to; `None`: not attached (pilusd runs
    /// without `--prefilter` or without an uplink), so the list is kept
    /// but nothing is filtered.
    pub device: Option<String>,
    pub entries: Vec<PrefilterEntry>,
    /// How many entries the list can hold.
    pub max_entries: u32,
}

/// A source CIDR the prefilter drops, and what it has dropped.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrefilterEntry {
    pub cidr: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointCreate {
    /// The container (sandbox) id the runtime knows the pod by.
    pub container_id: String,
    /// Path of the pod's network namespace (`/proc/<pid>/ns/net`,
    /// `/run/netns/<name>`).
    pub netns: String,
    /// The interface name inside the pod.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// The pod's Kubernetes namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub pod_name: Option<String>,
    /// `key=value` or `source:key=value` (source defaults to `k8s`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Set by the CNI plugin, which made the veth pair itself: the host
    /// side's name (in the agent's namespace). The agent then only
    /// allocates, attaches and writes maps; the plugin configures the pod.
    /// Unset: the agent makes and configures the pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    /// The pod side's MAC (required with `host_ifname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The CNI network that attached this endpoint (for CNI GC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_network: Option<String>,
    /// Labels the container runtime keeps for the container (read by the
    /// CNI plugin from the runtime's own metadata), as `key=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_labels: Vec<String>,
}

impl Default for EndpointCreate {
    fn default() -> EndpointCreate {
        EndpointCreate {
            container_id: String::new(),
            netns: String::new(),
            ifname: default_ifname(),
            namespace: default_namespace(),
            pod_name: None,
            labels: Vec::new(),
            host_ifname: None,
            mac: None,
            cni_network: None,
            runtime_labels: Vec::new(),
        }
    }
}

/// The host side's name for a pod interface: `lxc` + 11 hex digits of a
/// hash of (container id, ifname) — stable across retries and restarts,
/// unique enough per node, within IFNAMSIZ. The agent and the CNI plugin
/// both derive it, so either can find the link of a half-made ADD.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bit.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("lxc{:011x}", h & 0xfff_ffff_ffff)
}

pub fn default_ifname() -> String {
    "eth0".into()
}

pub fn default_namespace() -> String {
    "default".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointPolicyStatus {
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    /// Resolved entries (before port ranges become LPM prefixes).
    pub entries: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: u16,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    pub namespace: String,
    pub pod_name: Option<String>,
    /// The labels as given.
    pub labels: Vec<String>,
    pub identity: u32,
    pub ipv4: Ipv4Addr,
    /// The pod's gateway (the node's router address).
    pub gateway: Ipv4Addr,
    /// Prefix length of the pod's address (always 32: routed, not bridged).
    pub prefix_len: u8,
    pub mac: String,
    pub host_mac: String,
    pub host_ifindex: u32,
    pub policy: EndpointPolicyStatus,
    /// The CNI network that attached it (none: made through the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_network: Option<String>,
    /// When the agent created it (Unix time, milliseconds; 0: before the
    /// agent recorded it).
    #[serde(default)]
    pub created_unix_ms: u64,
    /// Where each label came from.
    #[serde(default)]
    pub label_sources: Vec<EndpointLabel>,
    /// The pod interface's MTU, when not the default (tunnel mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A label of an endpoint and who gave it: `cni` (the network
/// configuration's `args.cni.labels`), `runtime` (the container runtime's
/// metadata), `user` (`pilus endpoint labels`, or an API-made endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointLabel {
    pub label: String,
    pub source: String,
}

/// `PUT /v1/endpoints/{key}/labels`: labels to add (or change) and keys to
/// delete, on one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointLabelsChange {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub delete: Vec<String>,
    /// Allow changing or deleting labels the CNI configuration gave.
    #[serde(default)]
    pub override_cni: bool,
}

/// `POST /v1/endpoints/labels`: label changes of several endpoints, applied
/// all or none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointLabelsBatch {
    pub items: Vec<EndpointLabelsItem>,
    #[serde(default)]
    pub override_cni: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointLabelsItem {
    /// An endpoint id, container id or `namespace/pod`.
    pub endpoint: String,
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub delete: Vec<String>,
}

/// One attachment a runtime still uses: CNI GC keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// CNI GC of one network: delete its endpoints whose attachment is not in
/// `valid`, except those created at or after `keep_created_since_unix_ms`
/// (an ADD racing the GC, or finished after the runtime made its list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniGc {
    pub network: String,
    pub valid: Vec<CniAttachment>,
    pub keep_created_since_unix_ms: u64,
}

/// What a CNI GC did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniGcDone {
    /// Endpoints deleted (with their host links).
    pub deleted: Vec<CniAttachment>,
    /// Not listed, but too young to delete.
    pub kept_recent: Vec<CniAttachment>,
    pub revision: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointCreated {
    /// False when the endpoint existed already (a retried ADD).
    pub created: bool,
    pub endpoint: Endpoint,
    /// The policy revision enforced once the endpoint exists.
    pub revision: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deleted {
    /// How many objects were removed (0: there was nothing to delete).
    pub deleted: usize,
    pub revision: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub id: u32,
    /// reserved, cluster or cidr.
    pub kind: String,
    pub labels: Vec<String>,
    /// Endpoints (cluster) or policies (cidr) using it.
    pub refs: usize,
}

/// One file (or stdin) of policy documents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyFile {
    /// Named in error messages.
    pub name: String,
    pub text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyImport {
    pub files: Vec<PolicyFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyImported {
    /// The revision that is enforced now (maps written).
    pub revision: u64,
    pub policies: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicySummary {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub rules: usize,
    /// The endpoints its rules select now.
    pub endpoints: usize,
    /// The document as imported.
    pub source: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u64,
    /// The newest revision whose map writes are done.
    pub enforced: u64,
}

/// Which way a packet crosses an endpoint's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// What a policy lookup answers (`pilus policy trace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// No rule selects the endpoint in this direction.
    Unenforced,
    Allowed {
        cookie: u32,
    },
    /// Selected, and nothing allows it (DROP_POLICY).
    DeniedByDefault,
    /// A deny rule matched (DROP_POLICY_DENY).
    Denied {
        cookie: u32,
    },
}

impl Verdict {
    pub fn allowed(self) -> bool {
        matches!(self, Verdict::Unenforced | Verdict::Allowed { .. })
    }
}

/// A rule that matched a traced packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    pub policy: String,
    /// `spec.ingress[0]`.
    pub rule: String,
    pub deny: bool,
}

/// One direction of a trace: the policy of the endpoint it applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionTrace {
    pub direction: Direction,
    /// The endpoint whose policy applies.
    pub endpoint: String,
    /// Policies whose rules select the endpoint in this direction.
    pub selected_by: Vec<String>,
    pub matches: Vec<RuleMatch>,
    /// From the rules.
    pub verdict: Verdict,
    /// From the resolved map entries, as the datapath looks them up.
    pub datapath: Verdict,
}

/// The answer of `POST /v1/policy/trace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub src: String,
    pub dst: String,
    pub protocol: u8,
    pub port: u16,
    /// The source's egress policy (only for a local source).
    pub egress: Option<DirectionTrace>,
    /// The destination's ingress policy (only for a local destination).
    pub ingress: Option<DirectionTrace>,
    pub allowed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceRequest {
    /// An endpoint id, a pod address, `namespace/pod`, or labels
    /// (`k8s:app=web,...`).
    pub src: String,
    pub dst: String,
    pub port: u16,
    /// TCP, UDP, SCTP or ICMP.
    pub protocol: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamespaceLabels {
    pub namespace: String,
    pub labels: Vec<String>,
    #[serde(default)]
    pub revision: u64,
}

/// One entry of `pilus_policy`, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfPolicyEntry {
    pub endpoint: u16,
    pub direction: String,
    /// 0 = any identity.
    pub identity: u32,
    /// 0 = any protocol.
    pub protocol: u8,
    /// First port of the prefix block, and the block's last port.
    pub port: u16,
    pub port_end: u16,
    pub deny: bool,
    pub cookie: u32,
    pub prefix_len: u32,
}

/// One entry of the datapath's endpoint map (ifindex → endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfEndpointEntry {
    pub ifindex: u32,
    pub endpoint: u16,
    pub ipv4: Ipv4Addr,
    pub identity: u32,
    pub mac: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfIpcacheEntry {
    pub prefix: String,
    pub identity: u32,
}

/// One prefix of the ipcache as the control plane holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcacheEntry {
    pub prefix: String,
    /// The winner's identity: what the datapath holds.
    pub identity: u32,
    /// Every writer's entry, the winner first (`local-endpoint`,
    /// `remote-endpoint`, `node`, `policy-cidr`).
    pub sources: Vec<IpcacheSource>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcacheSource {
    pub source: String,
    pub identity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_endpoint: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BpfCtEntry {
    pub protocol: u8,
    pub src: String,
    pub dst: String,
    pub state: String,
    /// Seconds left before the entry expires.
    pub expires_in: i64,
    pub flags: u16,
    /// A service flow: `to <backend>` on its service entry (the tuple the
    /// client sent, pinned to that backend), `reply from frontend <id>` on
    /// its flow entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
}

// ---------------------------------------------------------------------------
// Services (`/v1/services`, `pilus service`)
// ---------------------------------------------------------------------------

/// A service: frontends and the backends they balance over. Every field
/// is checked by the agent; an unknown one is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    pub frontends: Vec<ServiceFrontend>,
    /// None is a service without backends (its frontends drop with
    /// DROP_NO_SERVICE_BACKEND), not a deletion.
    #[serde(default)]
    pub backends: Vec<ServiceBackend>,
    /// `random` (default) or `maglev`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// Session affinity by client address, for this many seconds since the
    /// client's last new connection (Kubernetes' `ClientIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_seconds: Option<u32>,
    /// Kubernetes' `externalTrafficPolicy` of the frontends reached from
    /// outside (NodePort, ExternalIP, LoadBalancer):
    /// `Cluster` (the default: any backend, one on another node reached
    /// from the receiving node's address) or `Local` (the receiving node's
    /// backends only, the client's address kept; a node without one drops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
}

pub fn default_algorithm() -> String {
    "random".into()
}

/// An address, port and protocol clients reach a service on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFrontend {
    /// `ClusterIP`, `NodePort`, `ExternalIP` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// IPv4; `0.0.0.0` for a NodePort on every node address.
    pub address: String,
    pub port: u16,
    /// `TCP` (default) or `UDP`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Which backends serve it: those of the same port name (Kubernetes'
    /// service port name; empty for a one-port service).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port_name: String,
}

pub fn default_protocol() -> String {
    "TCP".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBackend {
    pub address: String,
    pub port: u16,
    /// 1 to 100: a share of new flows proportional to it; 0 takes none.
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// `active` (default), `terminating` (only chosen when no backend is
    /// active, as kube-proxy does) or `quarantined` (never chosen).
    #[serde(default = "default_backend_state")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port_name: String,
}

pub fn default_weight() -> u16 {
    1
}

pub fn default_backend_state() -> String {
    "active".into()
}

/// `PUT /v1/services`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceUpserted {
    /// `namespace/name`.
    pub service: String,
    /// False: it replaced a service of that name.
    pub created: bool,
}

/// `POST /v1/services/import`: files of YAML or JSON documents.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceImport {
    pub files: Vec<PolicyFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServicesImported {
    /// `namespace/name` of every service written.
    pub services: Vec<String>,
    /// What was read but not imported, and why (a headless Service, an
    /// IPv6 address family).
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// A service as the agent holds it, with each frontend's datapath id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    #[serde(flatten)]
    pub service: Service,
    pub frontend_ids: Vec<u32>,
}

/// One frontend of the service maps, decoded (`GET /v1/bpf/lb`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfLbFrontend {
    /// `198.19.128.10:80/TCP`.
    pub frontend: String,
    pub id: u32,
    pub kind: String,
    pub algorithm: String,
    pub generation: u32,
    /// Slots (random) or the number of backends (Maglev) new flows choose from.
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_seconds: Option<u32>,
    /// A NodePort with externalTrafficPolicy: Local: new flows choose among
    /// this node's backends only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_traffic_only: bool,
    /// The backends new flows choose from, `address:port`, in slot order
    /// (random) or as the Maglev table holds them (each once).
    pub backends: Vec<String>,
    /// Replies come from this (`address:port`), if a reverse-NAT entry is there.
    pub rev_nat: Option<String>,
}

/// Conntrack and its garbage collection (`GET /v1/conntrack`, shown by
/// `pilus status`). Not part of `GET /v1/status`, whose answer changes only
/// when the agent's state does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStatus {
    /// Entries after the last GC pass.
    pub entries: u64,
    pub max_entries: u64,
    pub gc_runs: u64,
    /// Expired entries removed, all passes.
    pub gc_deleted: u64,
    /// Expired affinity entries removed, all passes.
    pub gc_affinity_deleted: u64,
    /// Masquerade's NAT entries after the last pass (two per flow).
    #[serde(default)]
    pub nat_entries: u64,
    /// Expired NAT entries removed, all passes.
    #[serde(default)]
    pub gc_nat_deleted: u64,
    /// New flows refused because the table was full (datapath drops
    /// DROP_CT_CREATE_FAILED since the maps were made).
    pub insert_failures: u64,
    /// When the last pass ran (Unix seconds), and how long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gc_unix: Option<u64>,
    pub last_gc_ms: u64,
    /// The wait before the next pass: shorter as the table fills.
    pub next_gc_in_ms: u64,
    /// The last pass's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A node's place in a cluster (absent on a single node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster store (etcd): `connected`, `unreachable` or `unknown`.
    pub store: String,
    /// Since when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix: Option<u64>,
    /// The last error, when unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Nodes known, this one included.
    pub nodes: usize,
    /// Pods of other nodes in this node's ipcache.
    #[serde(default)]
    pub remote_endpoints: usize,
    /// `tunnel` or `direct`.
    pub routing: String,
    pub underlay_ip: Ipv4Addr,
    /// This node's lease, as its keeper last saw it.
    pub lease: String,
    /// This node's pods still have to be published again (the store was
    /// unreachable when they changed).
    pub pending_publish: bool,
}

/// A node of the cluster (`GET /v1/nodes`, `pilus node list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: String,
    /// `tunnel` or `direct`.
    pub routing: String,
    /// This node (the one answering).
    pub local: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub node_name: String,
    pub pod_cidr: String,
    pub router_ip: Ipv4Addr,
    pub pin_dir: String,
    pub socket: String,
    pub state_dir: String,
    pub endpoints: usize,
    pub identities: usize,
    pub policies: usize,
    pub revision: u64,
    pub enforced_revision: u64,
    pub ipam_used: usize,
    pub ipam_capacity: usize,
    /// What the last resync against the pinned maps had to change
    /// (0/0 after a clean restart).
    pub resync_written: usize,
    pub resync_removed: usize,
    pub uptime_seconds: u64,
    /// Set when the node is part of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// The monitor (set by the agent's API; absent from the control
    /// plane's own view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorStatus>,
    /// Services and their frontends.
    #[serde(default)]
    pub services: usize,
    #[serde(default)]
    pub frontends: usize,
}

// ---------------------------------------------------------------------------
// Monitor: datapath events (`GET /v1/monitor`, `pilus monitor`)
// ---------------------------------------------------------------------------

/// The longest `wait_ms` `GET /v1/monitor` honours; larger values are
/// capped to it.
pub const MONITOR_MAX_WAIT_MS: u64 = 5000;

/// What an event reports.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum MonitorKind {
    /// A packet the datapath dropped, with the reason.
    Drop,
    /// A packet at an observation point (as many as the aggregation level
    /// lets through).
    Trace,
    /// A policy decision (a new flow, or after a policy change): allowed or
    /// denied, by which entry.
    PolicyVerdict,
    /// A program's decision in words (opt-in: `pilus config debug=true`).
    Debug,
    /// The packet as delivered (opt-in: `pilus config capture=true`).
    Capture,
    /// Events the datapath could not report: its ring buffer was full.
    Lost,
    /// A kind this build does not know (a newer datapath).
    #[default]
    Unknown,
}

impl MonitorKind {
    /// The kinds a client can ask for, by their names.
    pub const NAMED: &'static [(MonitorKind, &'static str)] = &[
        (MonitorKind::Drop, "drop"),
        (MonitorKind::Trace, "trace"),
        (MonitorKind::PolicyVerdict, "policy-verdict"),
        (MonitorKind::Debug, "debug"),
        (MonitorKind::Capture, "capture"),
    ];

    pub fn parse(s: &str) -> Option<MonitorKind> {
        MonitorKind::NAMED
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
    }

    pub fn name(self) -> &'static str {
        match self {
            MonitorKind::Lost => "lost",
            MonitorKind::Unknown => "unknown",
            k => MonitorKind::NAMED
                .iter()
                .find(|(x, _)| *x == k)
                .map_or("unknown", |(_, n)| n),
        }
    }
}

/// Which events `GET /v1/monitor` returns: of these kinds (none listed:
/// all) and involving these endpoints (as Cilium's `--from`, `--to`,
/// `--related-to`). Lost-event records always pass: a loss is never hidden.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorFilter {
    #[serde(default)]
    pub types: Vec<MonitorKind>,
    /// The packet's source endpoint is one of these.
    #[serde(default)]
    pub from: Vec<u16>,
    /// Its destination endpoint is one of these.
    #[serde(default)]
    pub to: Vec<u16>,
    /// Either of its endpoints is one of these.
    #[serde(default)]
    pub related_to: Vec<u16>,
}

impl MonitorFilter {
    /// Only events of `kind`.
    pub fn of(kind: MonitorKind) -> MonitorFilter {
        MonitorFilter {
            types: vec![kind],
            ..Default::default()
        }
    }

    pub fn matches_kind(&self, kind: MonitorKind) -> bool {
        kind == MonitorKind::Lost || self.types.is_empty() || self.types.contains(&kind)
    }

    /// Whether the endpoint filters say nothing.
    pub fn any_endpoint(&self) -> bool {
        self.from.is_empty() && self.to.is_empty() && self.related_to.is_empty()
    }

    pub fn matches(&self, e: &MonitorEvent) -> bool {
        if e.kind == MonitorKind::Lost {
            return true;
        }
        if !self.matches_kind(e.kind) {
            return false;
        }
        let is = |list: &[u16], ep: Option<u16>| ep.is_some_and(|x| list.contains(&x));
        (self.from.is_empty() || is(&self.from, e.src_endpoint))
            && (self.to.is_empty() || is(&self.to, e.dst_endpoint))
            && (self.related_to.is_empty()
                || is(&self.related_to, e.src_endpoint)
                || is(&self.related_to, e.dst_endpoint))
    }
}

/// A drop code with its name and meaning (the drop table of `pilus_abi`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorDropReason {
    pub code: u8,
    /// `DROP_POLICY`, ...; `DROP_<code>` for a code this build does not know.
    pub name: String,
    pub description: String,
}

/// What the captured bytes of the packet say (as much as was captured:
/// the datapath copies the first 128 bytes). Absent fields were not in the
/// packet, or not in what was captured of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorPacket {
    /// Absent when not even an Ethernet header was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    /// IPv4 source and destination; for ARP the sender and target address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<Ipv4Addr>,
    /// The IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// The TCP flags set, by name (`SYN`, `ACK`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// ARP operation (1 request, 2 reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_op: Option<u16>,
    /// An IPv4 fragment (the transport header is only in the first).
    #[serde(default)]
    pub fragment: bool,
    /// Why decoding stopped early (a short capture or a malformed header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The decision a policy-verdict event reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorVerdict {
    /// `allow` or `deny`.
    pub action: String,
    /// How the deciding entry matched, as Cilium names it: `L3-L4`,
    /// `L4-Only`, `L3-Only`, `all`, `L3-Proto`, `Proto-Only`, `none`
    /// (default deny).
    pub match_level: String,
    /// The protocol and port the decision was about (for ICMP: the type).
    pub protocol: u8,
    pub port: u16,
}

/// The policy behind a verdict or a policy drop, as the agent resolves the
/// deciding entry's cookie (or, for a default deny, the policies that select
/// the endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorPolicy {
    /// The deciding entry's cookie (0: none, a default deny).
    pub cookie: u32,
    /// The endpoint whose policy decided, and in which direction.
    pub endpoint: u16,
    pub direction: String,
    /// The policy's name: `CiliumNetworkPolicy shop/web`; for a default
    /// deny the first policy that selects the endpoint. Absent when none
    /// is known (the policy was deleted since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The rule, as `pilus policy trace` names rules: `spec.ingress[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The peers and ports of that rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// Every policy selecting the endpoint (default deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_by: Vec<String>,
    /// In words: `denied by CiliumNetworkPolicy shop/x rule spec.ingressDeny[0]
    /// (...)`, `default deny: endpoint selected by policy ...; no rule allows
    /// this peer`.
    pub explanation: String,
}

/// One datapath event, decoded: what `pilus monitor` prints, and what a
/// flow record is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// The agent's sequence number: increasing, never reused while the
    /// agent runs.
    pub seq: u64,
    /// When the datapath saw the packet, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub kind: MonitorKind,
    /// The CPU that saw the packet.
    #[serde(default)]
    pub cpu: u16,
    /// Set for drops.
    pub reason: Option<MonitorDropReason>,
    /// Where the datapath saw the packet: `from-endpoint`, `to-endpoint`,
    /// `to-stack`, `from-stack`; from and to other nodes: `from-overlay`,
    /// `to-overlay` (tunnel), `from-network`, `to-network` (direct routing).
    pub observation_point: String,
    /// `ingress` or `egress`: for a drop or a verdict, the direction of the
    /// policy (or check) that decided.
    pub direction: String,
    /// The flow's conntrack state: `new`, `established`, `reply`,
    /// `related`, or `unknown` (seen before conntrack was asked).
    #[serde(default)]
    pub state: String,
    /// The endpoint whose program reported the event (0: the interface had
    /// no endpoint).
    pub endpoint: u16,
    /// The packet's source and destination endpoints, when they are pods of
    /// this node.
    pub src_endpoint: Option<u16>,
    pub dst_endpoint: Option<u16>,
    /// Those pods as `namespace/name` (or their container id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_pod: Option<String>,
    /// The interface the program ran on, and its name when known.
    pub ifindex: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// The packet's length, and how much of it was captured.
    pub orig_len: u32,
    pub cap_len: u16,
    /// The packet's hash (`skb->hash`; cilium monitor's "mark").
    #[serde(default)]
    pub hash: u32,
    pub packet: MonitorPacket,
    /// The captured bytes, in hex (what `-j` dissects as cilium does).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    /// Policy verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<MonitorVerdict>,
    /// Policy verdicts and policy drops: the policy that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<MonitorPolicy>,
    /// Debug and capture events: the message (`Attempting local delivery
    /// for container id 13 from seclabel 256`, `Delivery to ifindex 7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Capture events: the interface delivered to (0: the stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_to: Option<u32>,
    /// Lost records: how many events the datapath could not report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
}

/// The monitor's settings (`GET /v1/monitor/config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// `none`, `low`, `medium` or `maximum` (see `pilusd --help`).
    pub aggregation: String,
    pub debug: bool,
    pub capture: bool,
}

/// A change of the monitor's settings (`PUT /v1/monitor/config`): what is
/// absent stays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfigUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<bool>,
}

/// The monitor in `pilus status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    pub config: MonitorConfig,
    /// Events the agent has read from the datapath since it started.
    pub events_read: u64,
    /// Events the datapath could not report because its ring buffer was
    /// full (since the ring was created: the count survives restarts).
    pub events_lost: u64,
}

/// The answer of `GET /v1/monitor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorBatch {
    /// Pass as `since` to get what follows (every event up to it was
    /// considered, whether it matched `type` or not).
    pub next: u64,
    /// Events after `since` that the agent's buffer no longer held
    /// (overwritten before they were asked for), of any type.
    pub lost: u64,
    /// The matching events after `since`, oldest first.
    pub events: Vec<MonitorEvent>,
}

// ---------------------------------------------------------------------------
// Doctor: faults that bypass or break the datapath (`GET /v1/doctor`)
// ---------------------------------------------------------------------------

/// How bad a finding is; ordered, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    /// Worth a look; the datapath works as configured (or the check could
    /// not run: its finding says why).
    Warning,
    /// Traffic is dropped, bypasses the datapath or goes astray.
    Fault,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Fault => "fault",
        }
    }
}

/// One thing a check found, with what it saw and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorFinding {
    pub severity: Severity,
    /// The problem, in a sentence.
    pub problem: String,
    /// What was seen: the rule, the route, the sysctl, the filters, the
    /// counts, each a line.
    pub evidence: Vec<String>,
    /// What to do about it.
    pub fix: String,
}

/// One check of `pilus doctor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorCheck {
    /// A stable name: `ip-rules`, `programs`, `sysctl`, `map-pressure`,
    /// `events-lost`, `etcd`.
    pub name: String,
    /// What it looks at, in a line.
    pub title: String,
    /// The worst severity among its findings; `ok` when there are none.
    pub status: Severity,
    /// What it saw, in a line (also when all is well).
    pub summary: String,
    pub findings: Vec<DoctorFinding>,
}

/// `GET /v1/doctor`: every check, run in the node's namespace by its agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorReport {
    pub node_name: String,
    /// The worst status of any check.
    pub status: Severity,
    pub checks: Vec<DoctorCheck>,
}

// ---------------------------------------------------------------------------
// Flows: Hubble-like records of what happened to packets (`pilus observe`)
// ---------------------------------------------------------------------------

/// The port on which an agent of a cluster serves its flows to the other
/// nodes' agents (Hubble's peer port).
pub const FLOWS_PEER_PORT: u16 = 4244;

/// What happened to the packet, as Hubble names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlowVerdict {
    /// Passed an observation point, or a policy allowed it.
    Forwarded,
    /// Dropped by the datapath, or denied by a policy.
    Dropped,
}

impl FlowVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowVerdict::Forwarded => "FORWARDED",
            FlowVerdict::Dropped => "DROPPED",
        }
    }

    /// `forwarded` / `FORWARDED`, `dropped` / `DROPPED`.
    pub fn parse(s: &str) -> Option<FlowVerdict> {
        match s.to_ascii_uppercase().as_str() {
            "FORWARDED" => Some(FlowVerdict::Forwarded),
            "DROPPED" => Some(FlowVerdict::Dropped),
            _ => None,
        }
    }
}

/// One side of a flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub identity: u32,
    /// The pod's name, when it is a pod of the reporting node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// From the pod's name or its identity's namespace label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The identity's labels (`k8s:app=web`, `reserved:world`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The node the address lives behind, when the cluster knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl FlowEndpoint {
    /// `namespace/pod`, else the address (with `:port`), else the identity.
    pub fn display(&self) -> String {
        let who = match (&self.namespace, &self.pod, self.ip) {
            (Some(ns), Some(pod), _) => format!("{ns}/{pod}"),
            (_, _, Some(ip)) => ip.to_string(),
            _ => format!("identity {}", self.identity),
        };
        match self.port {
            Some(p) => format!("{who}:{p}"),
            None => who,
        }
    }
}

/// A flow record: one datapath event (trace, drop or policy verdict) with
/// its endpoints named, as Hubble shows flows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The node whose datapath saw it.
    pub node: String,
    /// The reporting agent's sequence number of the event.
    pub seq: u64,
    pub verdict: FlowVerdict,
    /// `trace`, `drop` or `policy-verdict`.
    pub event: MonitorKind,
    /// Drops: the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<MonitorDropReason>,
    /// Where the datapath saw it (`from-endpoint`, `to-overlay`, ...).
    pub observation_point: String,
    /// `ingress` or `egress`, as the event says.
    pub traffic_direction: String,
    /// `new`, `established`, `reply`, `related` or `unknown`.
    pub state: String,
    /// `TCP`, `UDP`, `ICMPv4`, or the protocol's number.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_flags: Vec<String>,
    pub source: FlowEndpoint,
    pub destination: FlowEndpoint,
    /// The policy that decided (verdicts and policy drops): its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The decision in words (`denied by ...`, `default deny: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_explanation: Option<String>,
    /// Policy verdicts: how the entry matched (`L3-L4`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_level: Option<String>,
    /// The packet's interface on the reporting node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub summary: String,
}

/// Which flows to return: every list is "any of these" (empty: all), and
/// the lists must all match. A pod or namespace or port matches either
/// side of the flow, as Hubble's `--pod`, `--namespace`, `--port` do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// `namespace/name` or `name` (any namespace).
    #[serde(default)]
    pub pods: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub verdicts: Vec<FlowVerdict>,
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `tcp`, `udp`, `icmp` (lower case).
    #[serde(default)]
    pub protocols: Vec<String>,
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        let pod_is = |pat: &str, e: &FlowEndpoint| match (pat.split_once('/'), &e.pod) {
            (_, None) => false,
            (Some((ns, name)), Some(pod)) => e.namespace.as_deref() == Some(ns) && pod == name,
            (None, Some(pod)) => pod == pat,
        };
        let ns_is = |ns: &str, e: &FlowEndpoint| e.namespace.as_deref() == Some(ns);
        let port_is = |p: u16, e: &FlowEndpoint| e.port == Some(p);
        let either = |f2: &dyn Fn(&FlowEndpoint) -> bool| f2(&f.source) || f2(&f.destination);
        (self.pods.is_empty() || self.pods.iter().any(|p| either(&|e| pod_is(p, e))))
            && (self.namespaces.is_empty()
                || self.namespaces.iter().any(|n| either(&|e| ns_is(n, e))))
            && (self.verdicts.is_empty() || self.verdicts.contains(&f.verdict))
            && (self.ports.is_empty() || self.ports.iter().any(|p| either(&|e| port_is(*p, e))))
            && (self.protocols.is_empty()
                || self.protocols.iter().any(|p| {
                    let proto = f.protocol.to_ascii_lowercase();
                    proto == *p || (p == "icmp" && proto == "icmpv4")
                }))
    }
}

/// One node's answer within a [`FlowBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowNodeStatus {
    pub node: String,
    /// Pass back in `since` (`node:next,...`) for what follows.
    pub next: u64,
    /// Flows that node's buffer overwrote before they were asked for, and
    /// events its datapath could not report (full ring buffer).
    pub lost: u64,
    /// Why the node did not answer (unreachable, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer of `GET /v1/flows`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowBatch {
    /// Every node asked, with its cursor and losses.
    pub nodes: Vec<FlowNodeStatus>,
    /// The matching flows, oldest first.
    pub flows: Vec<Flow>,
}

/// `pilus trace`: a packet to run through this node's datapath.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PacketTraceRequest {
    /// The sending pod: `namespace/name`, an endpoint id, a container id
    /// or its address.
    pub from: String,
    /// A pod (as `from`), or an IPv4 address; either optionally with
    /// `:port`.
    pub to: String,
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    /// The destination port (TCP and UDP; or given in `to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The source port (TCP and UDP): a packet of the flow that uses it.
    /// The live conntrack entries of its tuple (either direction) are
    /// copied into the trace's private table, and, when there are any, a
    /// TCP packet is an ACK (the connection's next packet), not a SYN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
}

/// One side of a traced packet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TracePeer {
    pub ip: Ipv4Addr,
    /// The local pod, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<u16>,
}

/// Where a step happens: a participant of the sequence diagram, in the
/// order a packet meets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceLane {
    /// The sending pod.
    SourcePod,
    /// Its host-side veth, where from-container runs.
    SourceVeth,
    /// This node's stack.
    Node,
    /// The VXLAN tunnel.
    Tunnel,
    /// The node the tunnel leads to.
    RemoteNode,
    /// The receiving pod (local or remote).
    DestinationPod,
}

/// One step of a packet's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    pub lane: TraceLane,
    /// Where it goes next when the step moves it (an arrow in the diagram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_lane: Option<TraceLane>,
    /// For people: `policy: ingress of shop/web allowed (L3-L4, ...)`.
    pub text: String,
    /// The datapath event it comes from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<MonitorEvent>,
}

/// What became of the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceOutcome {
    /// Delivered to a local pod.
    Delivered,
    Dropped,
    /// Handed to this node's stack.
    Stack,
    /// Encapsulated to another node.
    Tunnel,
}

/// The end of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceVerdict {
    pub outcome: TraceOutcome,
    /// `delivered to pod shop/web`, `dropped: Policy denied (policy ...)`,
    /// `to the stack`, `to node-2 via tunnel`.
    pub summary: String,
    /// The pod it was delivered to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The tunnel's far end, and the node there when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_endpoint: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<MonitorDropReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<MonitorPolicy>,
    /// The tc verdict of from-container (`TC_ACT_REDIRECT`, ...).
    pub tc_verdict: String,
}

/// The answer of `POST /v1/trace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketTrace {
    pub node: String,
    pub from: TracePeer,
    pub to: TracePeer,
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    pub steps: Vec<TraceStep>,
    pub verdict: TraceVerdict,
    /// Live conntrack entries copied into the trace's private table (with
    /// `sport`).
    #[serde(default)]
    pub conntrack_copied: usize,
    /// What loading the private copy of the programs took, when this trace
    /// loaded it (the agent keeps it for the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u64>,
}
