//! Running an exported bundle under Debian's runc, as root or rootless as a test user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{As, TestEnv};

pub fn runc() -> Option<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// `runc run` of `bundle` as container `id`: as root (the caller must be root), or
/// rootless as `env`'s user with a runc state dir of its own (runc's default,
/// /run/user/UID, may not exist for a test user).
pub fn runc_run(env: &TestEnv, bundle: &Path, id: &str, rootless: bool) -> Command {
    let mut cmd = Command::new(runc().expect("runc"));
    if rootless {
        let state = env.dir.path().join("runc-state");
        std::fs::create_dir_all(&state).unwrap();
        env.chown_all(&state);
        cmd.arg("--root").arg(&state).env("HOME", &env.home);
        if As::me() != env.user {
            cmd.uid(env.user.uid).gid(env.user.gid);
        }
    }
    cmd.args(["run", "--bundle"]).arg(bundle).arg(id);
    cmd
}
