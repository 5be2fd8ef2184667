//! Running commands: turning `std::process` results into [`Error`]s with the
//! command line attached, and [`ChildGuard`], which owns a background
//! process and kills it when dropped.

use std::io;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use crate::Error;

/// The command line as a human would type it, for error messages.
pub(crate) fn display_cmd(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion and collects its output, whatever its status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output, Error> {
    cmd.output().map_err(|source| Error::Spawn {
        cmd: display_cmd(cmd),
        source,
    })
}

/// Runs `cmd` to completion; a non-zero status is an error carrying stderr.
pub(crate) fn checked(cmd: &mut Command) -> Result<String, Error> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            cmd: display_cmd(cmd),
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A background process that is killed (SIGKILL) and reaped when dropped.
///
/// The process is started as the leader of its own process group and the
/// whole group is killed, so helpers it forked (e.g. from `sh -c`) die with
/// it instead of lingering in the namespace.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    cmd: String,
}

impl ChildGuard {
    /// Starts `cmd` in a new process group and takes ownership of it.
    ///
    /// Use [`crate::NetNs::command`] to build a command that runs inside a
    /// namespace with custom stdio; [`crate::NetNs::spawn`] covers the
    /// common case.
    pub fn spawn(mut cmd: Command) -> Result<ChildGuard, Error> {
        use std::os::unix::process::CommandExt;
        // Own group, so that drop can kill the process and its children
        // with one killpg, and so a Ctrl-C meant for the test runner is not
        // what ends it.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: display_cmd(&cmd),
            source,
        })?;
        Ok(ChildGuard {
            child,
            cmd: display_cmd(&cmd),
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line that was started.
    pub fn cmd(&self) -> &str {
        &self.cmd
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stderr, if it was piped and not taken yet.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child.try_wait().map_err(|source| Error::Syscall {
            call: "waitpid",
            source,
        })
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` if
    /// it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process group (if the process still runs) and reaps the
    /// process; returns its exit status.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // Not reaped yet, so the pid (and with it the group id) cannot have
        // been reused by another process: killing the group is safe.
        let pgid = libc::pid_t::try_from(self.pid()).map_err(|_| Error::Syscall {
            call: "killpg",
            source: io::Error::from_raw_os_error(libc::ESRCH),
        })?;
        // SAFETY: killpg has no memory-safety preconditions.
        if unsafe { libc::killpg(pgid, libc::SIGKILL) } != 0 {
            let err = io::Error::last_os_error();
            // ESRCH: the group is already gone (the leader is a zombie and
            // nothing else was in the group); wait() below reaps it.
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::Syscall {
                    call: "killpg",
                    source: err,
                });
            }
        }
        self.child.wait().map_err(|source| Error::Syscall {
            call: "waitpid",
            source,
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(err) = self.kill() {
            eprintln!(
                "pilus-netns: cannot kill `{}` (pid {}): {err}",
                self.cmd,
                self.pid()
            );
        }
    }
}
