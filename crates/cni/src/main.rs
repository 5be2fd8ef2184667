//! pilus-cni: a CNI plugin, run by a container runtime with `CNI_*`
//! variables and the network configuration on stdin. Prints the result (or
//! a CNI error object) on stdout; exits non-zero on error. Notes about a
//! command that succeeded go to stderr, which runtimes show their user.

use pilus_cni::{plugin, spec};
use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    let mut notes = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Err(e) => Err(spec::CniError::new(
            spec::code::IO,
            format!("cannot read the network configuration from stdin: {e}"),
        )),
        Ok(_) => spec::Env::from_vars(|k| std::env::var(k).ok())
            .and_then(|env| plugin::run(&env, &stdin, &mut notes)),
    };
    if !notes.is_empty() {
        let mut stderr = std::io::stderr().lock();
        for n in &notes {
            let _ = writeln!(stderr, "pilus-cni: {n}");
        }
    }
    let (out, status) = match outcome {
        Ok(Some(v)) => (Some(v), 0),
        Ok(None) => (None, 0),
        Err(e) => (Some(e.to_json(&plugin::error_version(&stdin))), 1),
    };
    if let Some(v) = out {
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut stdout, &v);
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    }
    std::process::exit(status);
}
