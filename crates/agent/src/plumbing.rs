//! A pod's network plumbing: the veth pair (host side `lxc…` in the agent's
//! namespace, pod side in the pod's namespace), the pod's address and its
//! routes to the gateway. [`IpPlumbing`] does it with iproute2 (`ip -batch`,
//! one process per namespace); [`FakePlumbing`] records calls for tests.

use std::{
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    #[error("network namespace {path}")]
    Netns {
        path: PathBuf,
        #[source]
        source: pilus_netns::Error,
    },
    #[error("running `ip -batch` in {ns}: {stderr}")]
    Ip { ns: String, stderr: String },
    #[error("running ip")]
    Spawn(#[source] std::io::Error),
    #[error("link {ifname}")]
    Link {
        ifname: String,
        #[source]
        source: pilus_netns::Error,
    },
}

#[derive(Clone, Debug)]
pub struct PlumbRequest {
    pub netns: PathBuf,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub router: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plumbed {
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub mac: [u8; 6],
}

pub trait Plumbing: Send + Sync {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError>;
    /// Deletes the host side (the pod side goes with it); a missing link
    /// is fine.
    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError>;
    /// The host side's ifindex and MAC, if the link exists.
    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])>;
}

pub struct IpPlumbing;

fn ip_batch(ns: &str, commands: &str) -> Result<(), PlumbError> {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(PlumbError::Spawn)?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(commands.as_bytes())
        .map_err(PlumbError::Spawn)?;
    let out = child.wait_with_output().map_err(PlumbError::Spawn)?;
    if !out.status.success() {
        return Err(PlumbError::Ip {
            ns: ns.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn write_sysctl(path: &str, value: &str) {
    // Best effort: IPv6 off on pod links keeps router solicitations (which
    // the datapath would only count as drops) off the wire.
    let _ = std::fs::write(path, value);
}

impl Plumbing for IpPlumbing {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError> {
        let netns_err = |source| PlumbError::Netns {
            path: req.netns.clone(),
            source,
        };
        // The pair is made inside the pod's namespace with the host side
        // sent to ours (by pid), so the pod side never has to be moved.
        let me = std::process::id();
        let mac = {
            let _in_pod = pilus_netns::enter_path(Path::new(&req.netns)).map_err(netns_err)?;
            let (ifn, host, ip, gw) = (&req.ifname, &req.host_ifname, req.ip, req.router);
            ip_batch(
                &req.netns.display().to_string(),
                &format!(
                    "link add {ifn} type veth peer name {host} netns {me}\n\
                     addr add {ip}/32 dev {ifn}\n\
                     link set lo up\n\
                     link set {ifn} up\n\
                     route replace {gw} dev {ifn} scope link\n\
                     route replace default via {gw} dev {ifn}\n"
                ),
            )?;
            write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifn}/disable_ipv6"), "1");
            pilus_netns::link_here(ifn)
                .map_err(|source| PlumbError::Link {
                    ifname: ifn.clone(),
                    source,
                })?
                .1
        };
        write_sysctl(
            &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", req.host_ifname),
            "1",
        );
        ip_batch(
            "the agent's namespace",
            &format!("link set {} up\n", req.host_ifname),
        )?;
        let (host_ifindex, host_mac) =
            pilus_netns::link_here(&req.host_ifname).map_err(|source| PlumbError::Link {
                ifname: req.host_ifname.clone(),
                source,
            })?;
        Ok(Plumbed {
            host_ifindex,
            host_mac,
            mac,
        })
    }

    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError> {
        if self.lookup(host_ifname).is_none() {
            return Ok(());
        }
        ip_batch(
            "the agent's namespace",
            &format!("link del {host_ifname}\n"),
        )
    }

    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])> {
        pilus_netns::link_here(host_ifname).ok()
    }
}

/// Records plumbing without touching the kernel; clones share the links
/// (as a restarted agent sees the same kernel).
#[derive(Clone, Default)]
pub struct FakePlumbing {
    pub links: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Plumbing for FakePlumbing {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError> {
        let mut links = self.links.lock().expect("lock");
        let idx = 100 + links.iter().map(|(_, i)| i - 99).max().unwrap_or(0);
        links.push((req.host_ifname.clone(), idx));
        Ok(Plumbed {
            host_ifindex: idx,
            host_mac: [2, 0, 0, 0, 0, idx as u8],
            mac: [2, 1, 0, 0, 0, idx as u8],
        })
    }
    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError> {
        self.links
            .lock()
            .expect("lock")
            .retain(|(n, _)| n != host_ifname);
        Ok(())
    }
    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])> {
        self.links
            .lock()
            .expect("lock")
            .iter()
            .find(|(n, _)| n == host_ifname)
            .map(|(_, i)| (*i, [2, 0, 0, 0, 0, *i as u8]))
    }
}
