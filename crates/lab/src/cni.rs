//! Calling a CNI plugin the way a container runtime does: a fresh
//! environment with the `CNI_*` variables, the network configuration on
//! stdin, the result (or an error object) on stdout. The plugin runs
//! inside the namespace given (a node's), because the host side of a pod's
//! veth is created wherever the plugin runs.

use serde_json::Value;
use std::{
    io::Write,
    os::{
        fd::{AsRawFd, BorrowedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// One plugin invocation.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub plugin: &'a Path,
    /// A namespace file to run the plugin in (`None`: the caller's).
    pub run_in: Option<&'a Path>,
    /// The `CNI_*` variables (and anything else) to set; nothing else is
    /// inherited except `PATH`.
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

/// What the plugin did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed as JSON, if it is.
    pub json: Option<Value>,
    pub elapsed: Duration,
}

impl Outcome {
    /// The CNI error code in the error object, if the plugin failed.
    pub fn error_code(&self) -> Option<u64> {
        self.json.as_ref()?.get("code")?.as_u64()
    }

    pub fn error_msg(&self) -> String {
        self.json
            .as_ref()
            .and_then(|j| j.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or(&self.stdout)
            .to_string()
    }
}

/// The standard variables for an attachment command.
pub fn env(
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
    args: &str,
    plugin: &Path,
) -> Vec<(String, String)> {
    let dir = plugin.parent().map(PathBuf::from).unwrap_or_default();
    [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", container_id.to_string()),
        ("CNI_NETNS", netns.to_string()),
        ("CNI_IFNAME", ifname.to_string()),
        ("CNI_ARGS", args.to_string()),
        ("CNI_PATH", dir.display().to_string()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Makes `cmd`'s child enter the network namespace open at `ns` before it
/// execs (and, with `new_session`, leave our session so it outlives us).
/// `ns` must stay open until the child is spawned.
pub fn exec_in_netns(cmd: &mut Command, ns: &std::fs::File, new_session: bool) {
    let fd = ns.as_raw_fd();
    // SAFETY: only setns and setsid (async-signal-safe) run between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: the caller keeps `ns` open until the child is spawned,
            // and the child's copy of the descriptor is open here.
            pilus_netlink::netns::setns(BorrowedFd::borrow_raw(fd))?;
            if new_session && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn invoke(call: &Call<'_>) -> std::io::Result<Outcome> {
    let mut cmd = Command::new(call.plugin);
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ns = call.run_in.map(std::fs::File::open).transpose()?;
    if let Some(ns) = &ns {
        exec_in_netns(&mut cmd, ns, false);
    }
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that fails early may not read stdin: a broken pipe is
        // its answer, not ours.
        let _ = stdin.write_all(&call.stdin);
    }
    let out = child.wait_with_output()?;
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(Outcome {
        success: out.status.success(),
        code: out.status.code(),
        json: serde_json::from_str(stdout.trim()).ok(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    })
}
