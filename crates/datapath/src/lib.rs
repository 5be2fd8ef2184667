//! The Pilus datapath from userspace: the BPF objects compiled at build time,
//! loaded with aya, configured through load-time globals, pinned under bpffs,
//! attached to pod veths (rtnetlink through pilus-netlink for the tc
//! filters) and, for socket-level LB, to a cgroup ([`sock`]), driven
//! through typed maps (endpoints, ipcache, policy,
//! conntrack and its GC, services), and read without the loader for
//! metrics and `pilus doctor` ([`inspect`]), and copied privately for
//! `pilus trace` ([`trace`]). No BPF syscalls happen anywhere
//! else in Pilus; control-plane crates talk to this one.

mod attach;
pub mod bpffs;
pub mod btf;
pub mod clock;
pub mod config;
pub mod ctgc;
mod error;
pub mod events;
pub mod inspect;
pub mod lb;
mod loader;
mod maps;
pub mod monitor;
pub mod objects;
pub mod pins;
pub mod prefilter;
pub mod sock;
mod sys;
pub mod testrun;
pub mod trace;

pub use attach::{AttachMode, EndpointLinks, HookStatus, NodeDevice};
pub use config::{NatPorts, NodeConfig, PodCidr};
pub use ctgc::{CtTable, GcPass};
pub use error::{chain as error_chain, Error};
pub use events::EventReader;
pub use inspect::Inspector;
pub use loader::{Datapath, LoadOptions, Object, Program};
pub use maps::{DropCount, PolicyEntry};
pub use monitor::{EventTotals, MonitorSettings};
pub use pins::{MapDef, PinMismatch};
pub use prefilter::{Prefilter, PrefilterEntry, PrefilterError};
pub use sock::{SockHookStatus, SockProgram};
pub use trace::{TraceRun, Tracer, TracerSetup};
