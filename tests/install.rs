//! What a new user's set-up relies on: Cargo.toml's `rust-version` is the real minimum
//! (install.sh picks a toolchain by it), and install.sh refuses bad arguments clearly.
//! The set-up itself runs for real in a fresh Debian in `vm-tests/readme`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use common::stderr;

/// `1.89` and `1.89.0` alike, as three numbers.
fn version(s: &str) -> [u64; 3] {
    let mut v = [0; 3];
    for (slot, part) in v.iter_mut().zip(s.split('.')) {
        *slot = part.parse().unwrap_or(0);
    }
    v
}

/// `cargo build --locked` compiles every normal and build dependency in Cargo.lock for
/// this platform; the newest `rust-version` among them is what building csbox needs.
#[test]
fn rust_version_covers_every_locked_dependency() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let vv = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&vv.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: HashMap<&str, &serde_json::Value> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = m["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root_id = m["resolve"]["root"].as_str().unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root_id];
    while let Some(id) = todo.pop() {
        for d in nodes[id]["deps"].as_array().unwrap() {
            let built = d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"));
            let dep = d["pkg"].as_str().unwrap();
            if built && seen.insert(dep) {
                todo.push(dep);
            }
        }
    }
    assert!(seen.len() > 20, "the walk found only {seen:?}");
    let ours = packages[root_id]["rust_version"]
        .as_str()
        .expect("rust-version is set");
    let too_new: Vec<String> = seen
        .iter()
        .filter_map(|id| {
            let p = packages[id];
            let rv = p["rust_version"].as_str()?;
            (version(rv) > version(ours))
                .then(|| format!("{} {} needs {rv}", p["name"], p["version"]))
        })
        .collect();
    assert_eq!(version("1.89"), version("1.89.0"));
    assert!(
        too_new.is_empty(),
        "Cargo.toml says rust-version = {ours}, but Cargo.lock has: {too_new:#?}"
    );
}

#[test]
fn install_sh_refuses_bad_arguments_with_exit_2() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh");
    for args in [
        &["--frobnicate"][..],
        &["--prefix"],
        &["--prefix", "relative/dir"],
    ] {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("install.sh: "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = Command::new("bash")
        .arg(&script)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--user"));
}
