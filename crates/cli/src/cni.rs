//! `pilus cni install`: puts pilus-cni where runtimes look for plugins and
//! writes the network's conflist where they look for networks.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// The conflist `install` writes (also in examples/05-pilus.conflist).
pub fn conflist(name: &str, socket: &Path) -> String {
    let v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [ { "type": "pilus-cni", "socket": socket } ],
    });
    serde_json::to_string_pretty(&v).expect("json") + "\n"
}

#[derive(Subcommand, Debug)]
pub enum CniCommand {
    /// Copy pilus-cni into the runtime's plugin directory and write the
    /// network configuration (atomically: a runtime never sees half a file).
    Install {
        /// Where runtimes look for CNI plugins.
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// Where runtimes look for network configurations.
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// The network's name (`podman run --network NAME`).
        #[arg(long, default_value = "pilus")]
        network: String,
    },
    /// Print the network configuration `install` writes.
    Config {
        #[arg(long, default_value = "pilus")]
        network: String,
    },
}

fn write_atomic(dst: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dst.with_extension("pilus-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, dst).with_context(|| format!("installing {}", dst.display()))
}

pub fn run(cmd: CniCommand, socket: &Path) -> Result<()> {
    match cmd {
        CniCommand::Config { network } => print!("{}", conflist(&network, socket)),
        CniCommand::Install {
            bin_dir,
            conf_dir,
            network,
        } => {
            let exe = std::env::current_exe()?;
            let plugin = exe.with_file_name("pilus-cni");
            let bytes = std::fs::read(&plugin).with_context(|| {
                format!(
                    "reading {} (build it with `cargo build --release --bins`)",
                    plugin.display()
                )
            })?;
            std::fs::create_dir_all(&bin_dir)
                .with_context(|| format!("creating {}", bin_dir.display()))?;
            std::fs::create_dir_all(&conf_dir)
                .with_context(|| format!("creating {}", conf_dir.display()))?;
            let bin = bin_dir.join("pilus-cni");
            write_atomic(&bin, &bytes, 0o755)?;
            let conf = conf_dir.join(format!("05-{network}.conflist"));
            write_atomic(&conf, conflist(&network, socket).as_bytes(), 0o644)?;
            println!("installed {}\nwrote {}", bin.display(), conf.display());
        }
    }
    Ok(())
}
