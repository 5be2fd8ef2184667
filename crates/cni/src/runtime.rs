//! Labels a container runtime keeps for the container but does not pass to
//! CNI plugins (issue 14), read at ADD time from the runtime's own metadata
//! and sent to the agent as `runtime_labels`. docs/runtimes.md records what
//! each runtime makes reachable at ADD time; in short:
//!
//! - containerd (`ctr run --cni`): `CNI_NETNS` is `/proc/PID/ns/net` of the
//!   task's init process, whose parent is the task's shim, started as
//!   `containerd-shim-runc-v2 -namespace NS -id ID -address SOCKET`. That
//!   names the containerd, the namespace and the container without any
//!   configuration, and the container (with its labels) already exists, so
//!   `ctr containers info` (the `ctr` installed beside that shim) answers.
//! - podman 4.3: nothing. The container's lock is held during ADD (any
//!   podman command about it blocks), and its labels are only in podman's
//!   private database. Users label podman containers with
//!   `pilus endpoint labels`, or with `args.cni.labels` per network.
//!
//! Nothing here may fail an ADD: every problem becomes a note (printed on
//! the plugin's stderr) and the ADD goes on without runtime labels. What the
//! runtime says is bounded in time ([`QUERY_TIMEOUT`]) and size
//! ([`MAX_OUTPUT`], [`MAX_LABELS`]), and labels the agent would refuse
//! (it checks Kubernetes label syntax and refuses the whole endpoint) are
//! skipped here, each with a note.

use std::{
    collections::BTreeMap,
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The network configuration's `runtimeLabels`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Read containerd's labels when the container is a containerd task
    /// (found as described above); say nothing when it is not, since most
    /// runtimes (podman, CRI) have nothing to read.
    #[default]
    Auto,
    /// As `auto`, but a container that is not a containerd task is worth a
    /// note: the configuration expected one.
    Containerd,
    /// Never read runtime labels.
    Off,
}

impl Mode {
    /// The values `runtimeLabels` accepts.
    pub const NAMES: &'static [&'static str] = &["auto", "containerd", "off"];

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "auto" => Some(Mode::Auto),
            "containerd" => Some(Mode::Containerd),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }
}

/// How long the runtime has to answer: an ADD normally takes tens of
/// milliseconds, and a runtime that hangs must not hold the pod's network.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a runtime's answer may be (a container's record with its OCI
/// spec is a few KiB); more is not read and yields no labels.
pub const MAX_OUTPUT: usize = 1 << 20;
/// The most runtime labels passed to the agent; the rest are skipped.
pub const MAX_LABELS: usize = 64;
/// Bytes of a failing runtime command's stderr quoted in a note.
const MAX_STDERR: usize = 4096;
/// The most of `/proc/PID/cmdline` read (a shim's is about 200 bytes).
const MAX_CMDLINE: u64 = 64 * 1024;

/// Key prefixes of the runtime's own bookkeeping, not the workload's:
/// containerd copies image settings such as
/// `io.containerd.image.config.stop-signal` onto every container, and in an
/// identity they would split one workload into many. Skipped without a
/// note (every container has them).
const RUNTIME_KEY_PREFIXES: &[&str] = &["io.containerd.", "io.cri-containerd.", "nerdctl/"];

/// Keys Pilus sets itself (the pod's namespace and its namespace's
/// labels): a container may not claim them. Skipped with a note.
const PILUS_KEY_PREFIXES: &[&str] = &[
    "io.kubernetes.pod.namespace",
    "io.cilium.k8s.namespace.labels.",
];

/// Why the runtime's labels could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Proc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not in the form /proc/PID/stat")]
    Stat { path: PathBuf },
    #[error("the containerd shim's command line ({cmdline:?}) names no {flag}")]
    ShimArgs { cmdline: String, flag: &'static str },
    #[error(
        "CNI_CONTAINERID={cni_id:?} is not container {id:?} of namespace {namespace:?}, whose task owns CNI_NETNS"
    )]
    Mismatch {
        cni_id: String,
        namespace: String,
        id: String,
    },
    #[error("{program} is missing (it is installed beside the containerd shim)")]
    NoCtr { program: PathBuf },
    #[error("running {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not answer within {after:?}")]
    Timeout { program: PathBuf, after: Duration },
    #[error("{program} wrote more than {limit} bytes")]
    TooLarge { program: PathBuf, limit: usize },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{program}'s answer is not a container record")]
    Decode {
        program: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{program} answered about container {got:?}, not {want:?}")]
    WrongContainer {
        program: PathBuf,
        got: String,
        want: String,
    },
}

/// What was read: labels for the agent (`key=value`) and notes for the
/// runtime's user (why labels were skipped or none could be read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeLabels {
    pub labels: Vec<String>,
    pub notes: Vec<String>,
}

/// A containerd task, as its shim names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC socket.
    pub address: String,
    /// The shim's executable; `ctr` is looked for beside it.
    pub shim: PathBuf,
}

/// Reads the labels of the container attached at ADD, per `mode`.
pub fn read(mode: Mode, container_id: &str, netns: &str) -> RuntimeLabels {
    let mut out = RuntimeLabels::default();
    if mode == Mode::Off {
        return out;
    }
    let task = match containerd_task(Path::new("/proc"), netns) {
        Ok(Some(t)) => t,
        Ok(None) => {
            if mode == Mode::Containerd {
                out.notes.push(format!(
                    "runtimeLabels is \"containerd\", but CNI_NETNS={netns:?} is not the network namespace of a containerd task's process; no runtime labels"
                ));
            }
            return out;
        }
        Err(e) => {
            out.notes.push(format!(
                "no runtime labels: finding the containerd task: {}",
                chain(&e)
            ));
            return out;
        }
    };
    let labels = check_container_id(&task, container_id).and_then(|()| {
        let ctr = task
            .shim
            .parent()
            .map_or_else(|| PathBuf::from("ctr"), |d| d.join("ctr"));
        containerd_labels(&ctr, &task, QUERY_TIMEOUT)
    });
    match labels {
        Ok(found) => {
            let (kept, notes) = filter(&found);
            out.labels = kept;
            out.notes = notes;
        }
        Err(e) => out.notes.push(format!(
            "no runtime labels for containerd container {}/{}: {}",
            task.namespace,
            task.id,
            chain(&e)
        )),
    }
    out
}

/// An error and its sources, for a note.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn read_proc(path: PathBuf, limit: u64) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(limit).read_to_end(&mut buf))
        .map_err(|source| Error::Proc { path, source })?;
    Ok(buf)
}

/// The containerd task whose init process owns `netns`, if it is one:
/// `netns` is `/proc/PID/ns/net` and PID's parent runs a containerd shim.
/// `proc` is `/proc` (tests pass a tree of their own).
pub fn containerd_task(proc: &Path, netns: &str) -> Result<Option<Task>, Error> {
    let Some(pid) = netns
        .strip_prefix("/proc/")
        .and_then(|r| r.strip_suffix("/ns/net"))
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    else {
        return Ok(None);
    };
    let stat_path = proc.join(pid).join("stat");
    let stat = read_proc(stat_path.clone(), 4096)?;
    // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
    let stat = String::from_utf8_lossy(&stat);
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(Error::Stat { path: stat_path })?;
    let exe_path = proc.join(ppid).join("exe");
    let exe = std::fs::read_link(&exe_path).map_err(|source| Error::Proc {
        path: exe_path,
        source,
    })?;
    // A binary replaced on disk while the shim runs reads "PATH (deleted)".
    let exe = PathBuf::from(
        exe.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string(),
    );
    let is_shim = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("containerd-shim"));
    if !is_shim {
        return Ok(None);
    }
    let cmdline = read_proc(proc.join(ppid).join("cmdline"), MAX_CMDLINE)?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let shown = || args.join(" ").trim().to_string();
    let flag = |name: &'static str| -> Result<String, Error> {
        go_flag(&args, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::ShimArgs {
                cmdline: shown(),
                flag: name,
            })
    };
    Ok(Some(Task {
        namespace: flag("namespace")?,
        id: flag("id")?,
        address: flag("address")?,
        shim: exe,
    }))
}

/// The value of Go flag `name` (`-name V`, `--name V`, `-name=V`).
fn go_flag(args: &[String], name: &str) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(bare) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            continue;
        };
        if bare == name {
            return it.next().cloned();
        }
        if let Some(v) = bare.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v.to_string());
        }
    }
    None
}

/// `ctr run --cni` names the attachment `NAMESPACE-ID`; the plain id is
/// accepted too. Anything else means the process in `CNI_NETNS` is not
/// this container's, and its labels must not be taken for this one's.
fn check_container_id(task: &Task, cni_id: &str) -> Result<(), Error> {
    if cni_id == format!("{}-{}", task.namespace, task.id) || cni_id == task.id {
        return Ok(());
    }
    Err(Error::Mismatch {
        cni_id: cni_id.to_string(),
        namespace: task.namespace.clone(),
        id: task.id.clone(),
    })
}

/// The part of `ctr containers info` read here.
#[derive(serde::Deserialize)]
struct ContainerRecord {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Asks containerd for the container's labels with `ctr containers info`.
pub fn containerd_labels(
    ctr: &Path,
    task: &Task,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, Error> {
    if !ctr.is_file() {
        return Err(Error::NoCtr {
            program: ctr.to_path_buf(),
        });
    }
    let mut cmd = Command::new(ctr);
    // ctr reads CONTAINERD_ADDRESS/NAMESPACE from the environment: only the
    // flags below may say which containerd and which namespace.
    cmd.env_clear()
        .arg("--address")
        .arg(&task.address)
        .arg("--namespace")
        .arg(&task.namespace)
        .args(["containers", "info", "--"])
        .arg(&task.id);
    let out = run_bounded(cmd, timeout, MAX_OUTPUT)?;
    let record: ContainerRecord = serde_json::from_slice(&out).map_err(|source| Error::Decode {
        program: ctr.to_path_buf(),
        source,
    })?;
    if record.id != task.id {
        return Err(Error::WrongContainer {
            program: ctr.to_path_buf(),
            got: record.id,
            want: task.id.clone(),
        });
    }
    Ok(record.labels.unwrap_or_default())
}

/// Kills the child's whole process group (it was made its leader), so
/// that nothing it started keeps running or keeps its pipes open.
fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the group of a child this process spawned.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads up to `limit` bytes; `Err(())` if there were more.
fn read_limited(mut r: impl Read, limit: usize) -> Result<Vec<u8>, ()> {
    let mut buf = Vec::new();
    match r.by_ref().take(limit as u64 + 1).read_to_end(&mut buf) {
        Ok(_) if buf.len() > limit => Err(()),
        _ => Ok(buf),
    }
}

/// Runs `cmd` with no stdin and returns its stdout, or an error if it does
/// not exit successfully within `timeout` or writes more than `limit`
/// bytes. Whatever happens, the command and its children are gone when
/// this returns within about `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration, limit: usize) -> Result<Vec<u8>, Error> {
    let program = PathBuf::from(cmd.get_program());
    let deadline = Instant::now() + timeout;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: program.clone(),
        source,
    })?;
    // Readers on threads of their own: a command that writes without end,
    // or hangs with its pipes open, must not block this one past the
    // deadline (a reader left blocked ends with the plugin).
    let (out_tx, out_rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        let _ = out_tx.send(read_limited(stdout, limit));
    });
    let (err_tx, err_rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(MAX_STDERR as u64).read_to_end(&mut buf);
        let _ = err_tx.send(buf);
    });
    let timed_out = |child: &mut Child| {
        kill_group(child);
        Error::Timeout {
            program: program.clone(),
            after: timeout,
        }
    };
    let stdout = match out_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(buf)) => buf,
        Ok(Err(())) => {
            kill_group(&mut child);
            return Err(Error::TooLarge {
                program: program.clone(),
                limit,
            });
        }
        Err(_) => return Err(timed_out(&mut child)),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => return Err(timed_out(&mut child)),
            Err(source) => {
                kill_group(&mut child);
                return Err(Error::Spawn {
                    program: program.clone(),
                    source,
                });
            }
        }
    };
    if !status.success() {
        let stderr = err_rx
            .recv_timeout(Duration::from_millis(100))
            .unwrap_or_default();
        return Err(Error::Failed {
            program,
            status,
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        });
    }
    Ok(stdout)
}

/// Splits the runtime's labels into those passed to the agent (`key=value`,
/// in key order, at most [`MAX_LABELS`]) and a note for each one skipped
/// (but the runtime's own, which every container has).
pub fn filter(labels: &BTreeMap<String, String>) -> (Vec<String>, Vec<String>) {
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for (key, value) in labels {
        let shown = || format!("{:?}", truncated(&format!("{key}={value}")));
        if RUNTIME_KEY_PREFIXES.iter().any(|p| key.starts_with(p)) {
            continue;
        }
        if let Some(p) = PILUS_KEY_PREFIXES.iter().find(|p| key.starts_with(*p)) {
            notes.push(format!(
                "runtime label {} skipped: {p:?} keys are set by Pilus",
                shown()
            ));
        } else if let Err(why) = check_label(key, value) {
            notes.push(format!(
                "runtime label {} skipped: not a Kubernetes label: {why}",
                shown()
            ));
        } else if kept.len() == MAX_LABELS {
            notes.push(format!(
                "runtime label {} skipped: only {MAX_LABELS} runtime labels are passed",
                shown()
            ));
        } else {
            kept.push(format!("{key}={value}"));
        }
    }
    (kept, notes)
}

/// At most 100 characters of a label for a note (a runtime's label may be
/// a page long).
fn truncated(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Kubernetes label syntax, as the agent checks a pod label
/// (`pilus_policy::labels::Label::check_pod_label`; a test compares the
/// two): `[prefix/]name=value`, the prefix a DNS subdomain of at most 253
/// characters, name and value at most 63 letters, digits, '-', '_' or '.',
/// starting and ending with a letter or digit (the value may be empty).
pub fn check_label(key: &str, value: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.len() > 253 || !p.split('.').all(dns_label) {
            return Err("the key's prefix must be a DNS subdomain");
        }
    }
    let part_ok = |s: &str| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if !part_ok(name) {
        return Err("the key's name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit");
    }
    if !value.is_empty() && !part_ok(value) {
        return Err("the value must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::default(), Mode::Auto);
        for n in Mode::NAMES {
            assert!(Mode::parse(n).is_some(), "{n}");
        }
        assert_eq!(Mode::parse("podman"), None);
        assert_eq!(Mode::parse("Auto"), None);
        // Off reads nothing, whatever the namespace.
        assert_eq!(
            read(Mode::Off, "x", "/proc/1/ns/net"),
            RuntimeLabels::default()
        );
    }

    #[test]
    fn filters_labels_the_agent_would_refuse_and_the_runtimes_own() {
        let long = "v".repeat(64);
        let many: Vec<(String, String)> =
            (0..70).map(|i| (format!("k{i:02}"), "x".into())).collect();
        let (kept, notes) = filter(&map(&[
            ("app", "web"),
            ("tier", ""),
            ("example.com/team", "a_b.c-d"),
            ("io.containerd.image.config.stop-signal", "SIGTERM"),
            ("nerdctl/name", "web"),
            ("io.kubernetes.pod.namespace", "other"),
            ("io.cilium.k8s.namespace.labels.team", "x"),
            ("bad key", "x"),
            ("Upper.Example/x", "y"),
            ("a", &long),
            ("b", "-x"),
            ("c", "has space"),
            ("d:e", "x"),
        ]));
        assert_eq!(kept, vec!["app=web", "example.com/team=a_b.c-d", "tier="]);
        assert_eq!(notes.len(), 8, "{notes:#?}");
        assert!(!notes
            .iter()
            .any(|n| n.contains("stop-signal") || n.contains("nerdctl")));
        assert!(notes
            .iter()
            .any(|n| n.contains("io.kubernetes.pod.namespace") && n.contains("set by Pilus")));
        assert!(notes
            .iter()
            .any(|n| n.contains("\"bad key=x\"") && n.contains("not a Kubernetes label")));
        // A long label is shortened in its note.
        assert!(notes.iter().all(|n| n.len() < 400), "{notes:#?}");
        let (kept, notes) = filter(&many.into_iter().collect());
        assert_eq!(kept.len(), MAX_LABELS);
        assert_eq!(notes.len(), 70 - MAX_LABELS);
        assert!(notes[0].contains("only 64"), "{}", notes[0]);
    }

    /// The plugin skips exactly the labels the agent would refuse (a
    /// refused label fails the whole endpoint): both checks of Kubernetes
    /// label syntax agree on edge cases and on generated keys and values.
    #[test]
    fn label_syntax_agrees_with_the_agent() {
        use pilus_policy::labels::Label;
        let mut cases: Vec<(String, String)> = [
            ("app", "web"),
            ("a", ""),
            ("A.b_c-D", "X.y_z-0"),
            ("example.com/app", "v"),
            ("Example.com/app", "v"),
            ("-x.com/app", "v"),
            ("x-.com/app", "v"),
            ("x..com/app", "v"),
            ("/app", "v"),
            ("x.com/", "v"),
            ("a/b/c", "v"),
            ("_a", "v"),
            ("a_", "v"),
            ("a", "_v"),
            ("a", "v_"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        cases.push(("k".repeat(63), "v".repeat(63)));
        cases.push(("k".repeat(64), "v".into()));
        cases.push(("k".into(), "v".repeat(64)));
        cases.push((format!("{}/k", "p".repeat(253)), "v".into()));
        cases.push((format!("{}/k", "p".repeat(254)), "v".into()));
        cases.push((
            format!("{}.{}/k", "p".repeat(63), "q".repeat(63)),
            "v".into(),
        ));
        cases.push((format!("{}/k", "p".repeat(64)), "v".into()));
        // Generated: a small alphabet with every class of character the
        // rules treat apart, lengths around the limits.
        let alphabet = b"abcXYZ0123-_./";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..20_000 {
            let mut gen = |max: u64| -> String {
                let len = next(max);
                (0..len)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize] as char)
                    .collect()
            };
            let (k, v) = (gen(12), gen(8));
            cases.push((k, v));
        }
        let mut ok = 0;
        for (k, v) in &cases {
            // The agent splits `key=value` at the first '=' (no case here
            // has one in the key: the plugin formats valid keys only).
            let agent = Label::parse(&format!("{k}={v}"), "k8s")
                .and_then(|l| l.check_pod_label())
                .is_ok();
            let plugin = check_label(k, v).is_ok();
            assert_eq!(plugin, agent, "key {k:?} value {v:?}");
            ok += usize::from(plugin);
        }
        // Both outcomes are well represented.
        assert!(
            ok > 1000 && cases.len() - ok > 1000,
            "{ok} of {}",
            cases.len()
        );
    }

    #[test]
    fn reads_go_flags() {
        let args: Vec<String> = [
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "ns-a",
            "--id=c-1",
            "-address",
            "/run/x.sock",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(go_flag(&args, "namespace").as_deref(), Some("ns-a"));
        assert_eq!(go_flag(&args, "id").as_deref(), Some("c-1"));
        assert_eq!(go_flag(&args, "address").as_deref(), Some("/run/x.sock"));
        assert_eq!(go_flag(&args, "publish-binary"), None);
        // A prefix of another flag is not that flag.
        assert_eq!(go_flag(&args, "addr"), None);
    }

    /// A fake /proc: PID 40 (the task's init) whose parent 30 runs `exe`.
    fn fake_proc(exe: &str, cmdline: &[&str]) -> tempdir::Dir {
        let d = tempdir::Dir::new("proc");
        std::fs::create_dir_all(d.0.join("40")).unwrap();
        std::fs::create_dir_all(d.0.join("30")).unwrap();
        std::fs::write(d.0.join("40/stat"), "40 (sh (x) y) S 30 40 40 0 -1").unwrap();
        std::os::unix::fs::symlink(exe, d.0.join("30/exe")).unwrap();
        std::fs::write(d.0.join("30/cmdline"), cmdline.join("\0") + "\0").unwrap();
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new(tag: &str) -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "pilus-cni-runtime-{tag}-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn finds_the_task_through_its_shim() {
        let d = fake_proc(
            "/usr/bin/containerd-shim-runc-v2 (deleted)",
            &[
                "containerd-shim-runc-v2",
                "-namespace",
                "ns-a",
                "-id",
                "c-1",
                "-address",
                "/run/x.sock",
            ],
        );
        let t = containerd_task(&d.0, "/proc/40/ns/net").unwrap().unwrap();
        assert_eq!(
            t,
            Task {
                namespace: "ns-a".into(),
                id: "c-1".into(),
                address: "/run/x.sock".into(),
                shim: "/usr/bin/containerd-shim-runc-v2".into(),
            }
        );
        assert!(check_container_id(&t, "ns-a-c-1").is_ok());
        assert!(check_container_id(&t, "c-1").is_ok());
        let e = check_container_id(&t, "ns-a-c-2").unwrap_err();
        assert!(matches!(e, Error::Mismatch { .. }), "{e}");
        // Not a /proc namespace (podman, CRI): not a task, no error.
        for ns in [
            "/run/netns/x",
            "/proc/self/ns/net",
            "/proc/40/ns/net/..",
            "/proc//ns/net",
        ] {
            assert_eq!(containerd_task(&d.0, ns).unwrap(), None, "{ns}");
        }
    }

    #[test]
    fn a_parent_that_is_no_shim_is_no_task() {
        let d = fake_proc(
            "/usr/bin/bash",
            &["bash", "-namespace", "x", "-id", "y", "-address", "z"],
        );
        assert_eq!(containerd_task(&d.0, "/proc/40/ns/net").unwrap(), None);
        let d = fake_proc(
            "/usr/bin/containerd-shim",
            &["containerd-shim", "-namespace", "x"],
        );
        let e = containerd_task(&d.0, "/proc/40/ns/net").unwrap_err();
        assert!(matches!(e, Error::ShimArgs { flag: "id", .. }), "{e}");
        let e = containerd_task(&d.0, "/proc/41/ns/net").unwrap_err();
        assert!(matches!(e, Error::Proc { .. }), "{e}");
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_command_that_hangs_is_killed_at_the_deadline() {
        let start = Instant::now();
        // The grandchild keeps stdout open: the whole group must go.
        let e =
            run_bounded(sh("sleep 30 & sleep 30"), Duration::from_millis(300), 1024).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        // Output, then a hang.
        let e = run_bounded(
            sh("echo {}; exec sleep 30"),
            Duration::from_millis(300),
            1024,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
    }

    #[test]
    fn output_is_bounded_and_failures_quoted() {
        let e = run_bounded(sh("yes"), Duration::from_secs(5), 4096).unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 4096, .. }), "{e}");
        let e = run_bounded(sh("echo nope >&2; exit 3"), Duration::from_secs(5), 4096).unwrap_err();
        assert!(
            matches!(e, Error::Failed { ref stderr, .. } if stderr == "nope"),
            "{e}"
        );
        let out = run_bounded(sh("printf abc"), Duration::from_secs(5), 3).unwrap();
        assert_eq!(out, b"abc");
        let e =
            run_bounded(Command::new("/nonexistent/ctr"), Duration::from_secs(1), 3).unwrap_err();
        assert!(matches!(e, Error::Spawn { .. }), "{e}");
    }
}
