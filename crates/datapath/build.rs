//! Compiles every `bpf/*.c` into a BPF object in OUT_DIR with Debian clang.
//! The objects are embedded into the binaries (src/objects.rs); nothing is
//! ever compiled at run time.

use std::{env, path::PathBuf, process::Command};

fn clang() -> String {
    if let Ok(c) = env::var("CLANG") {
        return c;
    }
    for c in ["clang-19", "clang"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!(
        "no clang found to compile bpf/*.c: install Debian's clang-19 and libbpf-dev \
         (`apt-get install clang-19 libbpf-dev`), or set CLANG"
    );
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let bpf = root.join("bpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = clang();
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", bpf.display());

    let mut sources: Vec<_> = std::fs::read_dir(&bpf)
        .expect("read bpf/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    for dir in [bpf.clone(), bpf.join("lib"), bpf.join("lib/abi")] {
        for e in std::fs::read_dir(&dir).expect("read bpf dir").flatten() {
            println!("cargo:rerun-if-changed={}", e.path().display());
        }
    }

    for src in sources {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        let obj = out.join(format!("{stem}.o"));
        let status = Command::new(&clang)
            .args([
                "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-mcpu=v3",
            ])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg(format!("-I{}", bpf.display()))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        assert!(status.success(), "{clang} failed on {}", src.display());
    }
}
