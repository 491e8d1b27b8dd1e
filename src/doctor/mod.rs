//! `csbox doctor`: what this machine supports, each check with ok / warn / fail, one line
//! of detail and the fix. Kernel features are tried for real in forked children
//! ([`probe`]); sysctls only explain why a try failed.

mod check;
mod containment;
pub mod probe;

use check::check;
pub use check::{Check, Report, Status};

use std::path::Path;

use nix::errno::Errno;

use crate::error::Result;
use crate::paths::Paths;
use crate::update::install::{detect_method, installed_version, Method};
use probe::{OverlayDirs, Probe};

use crate::hints::{FIX_APPARMOR, FIX_COMPAT, FIX_MAX_USERNS, FIX_UNPRIVILEGED_USERNS_CLONE};

pub fn command(json: bool) -> Result<i32> {
    let paths = Paths::from_env()?;
    let report = run_checks(&paths);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print_human(&report);
    }
    Ok(if report.ok { 0 } else { 1 })
}

fn print_human(report: &Report) {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        println!("{status:<4}  {:<width$}  {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("{:<4}  {:<width$}  fix: {fix}", "", "");
        }
    }
    let count = |s| report.checks.iter().filter(|c| c.status == s).count();
    println!(
        "\n{} failed, {} warnings: {}",
        count(Status::Fail),
        count(Status::Warn),
        if report.ok {
            "csbox can run here"
        } else {
            "csbox run will not work as designed until the failures are fixed"
        }
    );
}

/// `kernel.unprivileged_userns_clone` → the contents of /proc/sys/kernel/unprivileged_userns_clone.
pub fn sysctl(name: &str) -> Option<String> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn run_checks(paths: &Paths) -> Report {
    // The probes fork: run them before anything else starts a process.
    let userns = probe::user_namespace();
    let seccomp = probe::seccomp_filter();
    let overlay = if userns.is_ok() {
        Some(
            OverlayDirs::new(&std::env::temp_dir(), None)
                .map_err(|e| {
                    format!(
                        "cannot make scratch dirs in {}: {e}",
                        std::env::temp_dir().display()
                    )
                })
                .map(|d| probe::overlay(&d)),
        )
    } else {
        None
    };
    let proc = userns.is_ok().then(|| {
        tempfile::Builder::new()
            .prefix(".csbox-doctor-proc-")
            .tempdir()
            .map(|d| probe::proc_mount(d.path()))
    });

    let mut checks = vec![
        userns_check(&userns),
        apparmor_check(&userns),
        overlay_check(overlay),
        seccomp_check(&seccomp),
        tiocsti_check(&seccomp),
        claude_check(paths),
        claude_root_check(paths),
        sessions_dir_check(paths, userns.is_ok()),
        legacy_sessions_check(paths),
        container_check(),
    ];
    checks.extend(containment::checks(paths, userns.is_ok()));
    checks.push(match proc {
        None => not_tried("proc"),
        Some(Err(e)) => check(
            "proc",
            Status::Warn,
            format!("not tried: no scratch dir ({e})"),
        ),
        Some(Ok(p)) => proc_check(&p),
    });
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    Report { checks, ok }
}

fn not_tried(name: &'static str) -> Check {
    check(
        name,
        Status::Warn,
        "not tried: user namespaces are refused (see user_namespaces)",
    )
}

fn userns_check(p: &Probe) -> Check {
    const NAME: &str = "user_namespaces";
    let max = sysctl("user.max_user_namespaces");
    let clone = sysctl("kernel.unprivileged_userns_clone");
    let restrict = sysctl("kernel.apparmor_restrict_unprivileged_userns");
    let Err(r) = p else {
        return check(
            NAME,
            Status::Ok,
            format!(
                "unshare(CLONE_NEWUSER) works (user.max_user_namespaces={})",
                max.as_deref().unwrap_or("?")
            ),
        );
    };
    let fail = |detail: String, fix: String| check(NAME, Status::Fail, detail).fix(fix);
    match r.errno {
        Errno::ENOSPC => fail(
            format!(
                "{r}: user.max_user_namespaces is {} (0 disables them; otherwise all are in use)",
                max.as_deref().unwrap_or("?")
            ),
            format!("{FIX_MAX_USERNS} (as root; persist it in /etc/sysctl.d/), {FIX_COMPAT}"),
        ),
        Errno::EPERM | Errno::EACCES => {
            let (cause, fix) = if clone.as_deref() == Some("0") {
                (
                    "kernel.unprivileged_userns_clone is 0".to_string(),
                    format!("{FIX_UNPRIVILEGED_USERNS_CLONE} (as root), {FIX_COMPAT}"),
                )
            } else if restrict.as_deref() == Some("1") {
                (
                    "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)".into(),
                    format!("install csbox's AppArmor profile: {FIX_APPARMOR}; {FIX_COMPAT}"),
                )
            } else {
                (
                    "refused by a security policy: an LSM or the seccomp profile of a container (Docker's default refuses unshare)".into(),
                    format!("run the container with a seccomp profile that allows unshare/clone with CLONE_NEWUSER, {FIX_COMPAT}"),
                )
            };
            fail(format!("{r}: {cause}"), fix)
        }
        Errno::EINVAL => fail(
            format!("{r}: this kernel has no user namespaces (CONFIG_USER_NS)"),
            format!("a kernel with CONFIG_USER_NS=y, {FIX_COMPAT}"),
        ),
        _ => fail(r.to_string(), FIX_COMPAT.trim_start_matches("or ").into()),
    }
}

fn apparmor_check(userns: &Probe) -> Check {
    const NAME: &str = "apparmor_userns";
    match sysctl("kernel.apparmor_restrict_unprivileged_userns").as_deref() {
        Some("1") if userns.is_ok() => check(
            NAME,
            Status::Ok,
            "kernel.apparmor_restrict_unprivileged_userns=1, and csbox may create user namespaces (its AppArmor profile is loaded, or csbox runs as root)",
        ),
        Some("1") => {
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            check(
                NAME,
                Status::Warn,
                format!("kernel.apparmor_restrict_unprivileged_userns=1: AppArmor refuses user namespaces to programs without a profile that allows them (csbox runs from {exe})"),
            )
            .fix(format!("{FIX_APPARMOR} (from the csbox source tree; the profile attaches to /usr/bin, /usr/local/bin, ~/.cargo/bin and ~/.local/bin)"))
        }
        Some(v) => check(
            NAME,
            Status::Ok,
            format!("kernel.apparmor_restrict_unprivileged_userns={v}"),
        ),
        None => check(
            NAME,
            Status::Ok,
            "no AppArmor user-namespace restriction in this kernel",
        ),
    }
}

fn overlay_check(p: Option<std::result::Result<Probe, String>>) -> Check {
    const NAME: &str = "overlayfs";
    match p {
        None => not_tried(NAME),
        Some(Err(e)) => check(NAME, Status::Warn, format!("not tried: {e}")),
        Some(Ok(Ok(()))) => check(
            NAME,
            Status::Ok,
            "an unprivileged overlay mount (userxattr) works in a user namespace",
        ),
        Some(Ok(Err(r))) => check(
            NAME,
            Status::Fail,
            format!("{r}: csbox falls back to a fresh ~/.claude per session (your shared config read-only, no history carried over)"),
        )
        .fix("Linux ≥ 5.11 allows overlayfs in a user namespace; upgrade the kernel for the copy-on-write ~/.claude"),
    }
}

fn seccomp_check(p: &Probe) -> Check {
    const NAME: &str = "seccomp";
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    // SAFETY: PR_GET_SECCOMP only reads our mode; EINVAL without CONFIG_SECCOMP.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let already = match (mode, field("Seccomp_filters:")) {
        (2, Some(n)) => {
            format!("; csbox already runs under {n} seccomp filter(s), e.g. a container's policy")
        }
        (2, None) => "; csbox already runs under a seccomp filter".into(),
        _ => String::new(),
    };
    match p {
        Ok(()) => check(
            NAME,
            Status::Ok,
            format!("csbox's seccomp filter installs and denies TIOCSTI{already}"),
        ),
        Err(r) => {
            let config = if mode < 0 || field("Seccomp:").is_none() {
                " (this kernel has no CONFIG_SECCOMP)"
            } else {
                ""
            };
            check(NAME, Status::Fail, format!("{r}{config}"))
                .fix("a kernel with CONFIG_SECCOMP_FILTER=y; csbox installs its filter in every session and refuses to run without it")
        }
    }
}

fn tiocsti_check(seccomp: &Probe) -> Check {
    const NAME: &str = "tiocsti";
    let legacy = sysctl("dev.tty.legacy_tiocsti");
    let kernel = legacy.as_deref() == Some("0");
    let filter = seccomp.is_ok();
    let detail = match (kernel, filter) {
        (true, true) => "the kernel refuses TIOCSTI (dev.tty.legacy_tiocsti=0), and csbox's seccomp filter denies it in every session too".into(),
        (true, false) => "the kernel refuses TIOCSTI (dev.tty.legacy_tiocsti=0)".into(),
        (false, true) => format!(
            "csbox's seccomp filter denies TIOCSTI in every session (the kernel allows it: dev.tty.legacy_tiocsti={})",
            legacy.as_deref().unwrap_or("absent, Linux < 6.2")
        ),
        (false, false) => {
            return check(
                NAME,
                Status::Fail,
                "nothing stops TIOCSTI: the kernel allows it and csbox's seccomp filter cannot be installed (see seccomp); a sandboxed process could type commands into your terminal",
            )
            .fix("sysctl -w dev.tty.legacy_tiocsti=0 (Linux ≥ 6.2)")
        }
    };
    check(NAME, Status::Ok, detail)
}

fn claude_check(paths: &Paths) -> Check {
    const NAME: &str = "claude";
    let install = format!("npm install -g {}", crate::update::registry::PACKAGE);
    let Some(bin) = paths.find_claude() else {
        return check(
            NAME,
            Status::Warn,
            "claude is not installed (not on PATH, CLAUDE_BIN unset); `csbox run -- CMD` still works",
        )
        .fix(format!("{install}, or set CLAUDE_BIN"));
    };
    let method = detect_method(&bin);
    let how = match &method {
        Method::NpmGlobal { prefix } => format!("npm-global, prefix {}", prefix.display()),
        Method::Native => "native".into(),
        Method::Unknown => "installed another way: `csbox update` cannot update it".into(),
    };
    match installed_version(&bin) {
        Ok(v) => check(NAME, Status::Ok, format!("{}: {v} ({how})", bin.display())),
        Err(e) => check(NAME, Status::Warn, format!("{e} ({how})"))
            .fix(format!("reinstall it: {install}")),
    }
}

/// Writable, or else the fix. `label` is the variable's name (`CLAUDE_ROOT`).
fn writable(label: &str, p: &Path) -> std::result::Result<String, Check> {
    use nix::unistd::{access, AccessFlags};
    let name = "writable";
    if p.exists() && !p.is_dir() {
        return Err(check(
            name,
            Status::Fail,
            format!("{label} {} is not a directory", p.display()),
        )
        .fix(format!("move it aside or point {label} at a directory")));
    }
    let Some(dir) = crate::paths::existing_ancestor(p) else {
        return Err(check(
            name,
            Status::Fail,
            format!("{label} {}: no existing parent", p.display()),
        ));
    };
    let state = if dir == p {
        String::new()
    } else {
        format!(
            " (does not exist yet; csbox creates it in {})",
            dir.display()
        )
    };
    match access(&dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => Ok(format!("{label} {} is writable{state}", p.display())),
        Err(e) => Err(check(
            name,
            Status::Fail,
            format!(
                "access({}, W_OK) => {e}: {label} is not writable{state}",
                dir.display()
            ),
        )
        .fix(format!(
            "sudo chown -R \"$USER\" {}, or point {label} elsewhere",
            dir.display()
        ))),
    }
}

fn claude_root_check(paths: &Paths) -> Check {
    const NAME: &str = "claude_root";
    match writable("CLAUDE_ROOT", &paths.claude_root) {
        Ok(d) => check(
            NAME,
            Status::Ok,
            format!("{d}; it is each session's read-only lower layer"),
        ),
        Err(c) => Check { name: NAME, ..c },
    }
}

/// File systems overlayfs refuses as an upper layer: it needs d_type, user.* xattrs and
/// RENAME_WHITEOUT there (Documentation/filesystems/overlayfs.rst).
fn bad_upper_fs(f_type: i64) -> Option<&'static str> {
    Some(match f_type {
        0x794c_7630 => "overlayfs",
        0x6969 => "NFS",
        0x6573_5546 => "FUSE",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x517B => "SMB",
        0x0102_1997 => "9p",
        0xF15F => "eCryptfs",
        _ => return None,
    })
}

/// statfs(2) f_type, which is i64 on x86-64 but 32 bits on other architectures.
#[allow(clippy::useless_conversion)]
fn fs_type(p: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(p)
        .ok()
        .map(|s| i64::from(s.filesystem_type().0))
}

fn sessions_dir_check(paths: &Paths, userns_ok: bool) -> Check {
    const NAME: &str = "sessions_dir";
    let fail = |c: Check| Check { name: NAME, ..c };
    if paths.store_inside_claude_root() {
        return check(
            NAME,
            Status::Fail,
            format!(
                "SESSIONS_DIR {} lies inside CLAUDE_ROOT {}: overlayfs refuses an upper layer inside its lower layer",
                paths.sessions_dir.display(),
                paths.claude_root.display()
            ),
        )
        .fix("unset SESSIONS_DIR (default ~/.local/share/csbox/sessions) or point it outside CLAUDE_ROOT");
    }
    let detail = match writable("SESSIONS_DIR", &paths.sessions_dir) {
        Ok(d) => d,
        Err(c) => return fail(c),
    };
    let Some(dir) = crate::paths::existing_ancestor(&paths.sessions_dir) else {
        return check(NAME, Status::Fail, detail);
    };
    let bad = fs_type(&dir).and_then(bad_upper_fs);
    if !userns_ok {
        return match bad {
            Some(t) => check(
                NAME,
                Status::Warn,
                format!("{detail}, but on {t}, which overlayfs refuses as an upper layer"),
            )
            .fix("point SESSIONS_DIR at a local file system (ext4, xfs, btrfs, tmpfs)"),
            None => check(
                NAME,
                Status::Ok,
                format!("{detail} (overlay not tried: user namespaces are refused)"),
            ),
        };
    }
    // The real thing: an upper layer here over CLAUDE_ROOT as the lower layer.
    let lower = paths
        .claude_root
        .is_dir()
        .then_some(paths.claude_root.as_path());
    let probe = match OverlayDirs::new(&dir, lower) {
        Ok(d) => probe::overlay(&d),
        Err(e) => {
            return check(
                NAME,
                Status::Fail,
                format!("cannot create a scratch dir in {}: {e}", dir.display()),
            )
        }
    };
    match (probe, bad) {
        (Ok(()), _) => check(NAME, Status::Ok, format!("{detail}; an overlay with its upper layer here and CLAUDE_ROOT below mounts and takes writes")),
        (Err(r), t) => check(
            NAME,
            Status::Fail,
            format!("{detail}, but {r}{}: sessions fall back to a fresh ~/.claude", t.map(|t| format!(" ({t} as an upper layer)")).unwrap_or_default()),
        )
        .fix("point SESSIONS_DIR at a local file system (ext4, xfs, btrfs, tmpfs)"),
    }
}

fn legacy_sessions_check(paths: &Paths) -> Check {
    const NAME: &str = "old_sessions_store";
    let link = paths.legacy_sessions_link();
    match std::fs::symlink_metadata(&link) {
        Err(_) => check(
            NAME,
            Status::Ok,
            format!(
                "{} does not exist; csbox run links it to SESSIONS_DIR",
                link.display()
            ),
        ),
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(&link).unwrap_or_default();
            check(
                NAME,
                Status::Ok,
                format!("{} links to {}", link.display(), target.display()),
            )
        }
        Ok(m) if m.is_dir() => {
            let n = std::fs::read_dir(&link).map(|d| d.count()).unwrap_or(0);
            let aside = link.with_file_name("sessions.old");
            check(
                NAME,
                Status::Warn,
                format!(
                    "{} is a real directory ({n} entries), probably left by the old scripts; csbox keeps its store in {} and links {} to it",
                    link.display(),
                    paths.sessions_dir.display(),
                    link.display()
                ),
            )
            .fix(format!(
                "mv {} {} (while no old session runs); the next csbox run creates the link",
                link.display(),
                aside.display()
            ))
        }
        Ok(_) => check(
            NAME,
            Status::Warn,
            format!("{} is a file, not the link csbox expects", link.display()),
        )
        .fix(format!("mv {0} {0}.old", link.display())),
    }
}

/// Signs that csbox runs inside a container, strongest first.
fn container_evidence() -> Vec<String> {
    let mut ev = Vec::new();
    for f in ["/.dockerenv", "/run/.containerenv"] {
        if Path::new(f).exists() {
            ev.push(format!("{f} exists"));
        }
    }
    if let Ok(env) = std::fs::read("/proc/1/environ") {
        if let Some(v) = env
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(b"container="))
        {
            ev.push(format!(
                "pid 1 has container={}",
                String::from_utf8_lossy(v)
            ));
        }
    }
    if let Ok(cg) = std::fs::read_to_string("/proc/1/cgroup") {
        for word in ["docker", "kubepods", "containerd", "libpod"] {
            if cg.contains(word) {
                ev.push(format!("/proc/1/cgroup mentions {word}"));
            }
        }
    }
    ev
}

fn container_check() -> Check {
    const NAME: &str = "container";
    let ev = container_evidence();
    if ev.is_empty() {
        return check(NAME, Status::Ok, "not inside a container");
    }
    check(
        NAME,
        Status::Warn,
        format!("csbox runs inside a container ({}): nested namespaces and a fresh /proc may be refused (see proc)", ev.join(", ")),
    )
    .fix("if csbox run fails: Docker --security-opt seccomp=unconfined --security-opt systempaths=unconfined, podman --security-opt unmask=ALL; or --profile compat")
}

fn proc_check(p: &Probe) -> Check {
    const NAME: &str = "proc";
    match p {
        Ok(()) => check(NAME, Status::Ok, "a fresh /proc mounts in a new pid namespace"),
        Err(r) => check(
            NAME,
            Status::Fail,
            format!("{r}: a sandbox cannot have its own /proc here (a container that masks parts of /proc refuses new proc mounts)"),
        )
        .fix("Docker --security-opt systempaths=unconfined, podman --security-opt unmask=ALL, Kubernetes procMount: Unmasked; or --profile compat"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(errno: Errno) -> Probe {
        Err(probe::Refused {
            what: "unshare(CLONE_NEWUSER)".into(),
            errno,
        })
    }

    #[test]
    fn enospc_names_max_user_namespaces_and_the_way_out() {
        let c = userns_check(&refused(Errno::ENOSPC));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("ENOSPC") && c.detail.contains("user.max_user_namespaces"));
        let fix = c.fix.unwrap();
        assert!(fix.contains(FIX_MAX_USERNS) && fix.contains("--profile compat"));
    }

    #[test]
    fn nothing_stops_tiocsti_without_seccomp_unless_the_kernel_does() {
        let c = tiocsti_check(&refused(Errno::EINVAL));
        if sysctl("dev.tty.legacy_tiocsti").as_deref() == Some("0") {
            assert_eq!(c.status, Status::Ok);
        } else {
            assert_eq!(c.status, Status::Fail);
            assert!(c.fix.unwrap().contains("dev.tty.legacy_tiocsti=0"));
        }
    }

    #[test]
    fn network_and_stacked_file_systems_are_refused_as_upper_layers() {
        assert_eq!(bad_upper_fs(0x6969), Some("NFS"));
        assert_eq!(bad_upper_fs(0x794c_7630), Some("overlayfs"));
        assert_eq!(bad_upper_fs(0x6573_5546), Some("FUSE"));
        assert_eq!(bad_upper_fs(0xEF53), None, "ext4");
    }

    #[test]
    fn the_json_has_name_status_detail_fix_and_ok() {
        let r = Report {
            ok: true,
            checks: vec![check("x", Status::Warn, "d")],
        };
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"checks":[{"name":"x","status":"warn","detail":"d","fix":null}],"ok":true})
        );
    }
}
