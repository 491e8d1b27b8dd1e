//! The checks behind the containment: the copy-on-write home, openat2 for session
//! sources, mount_setattr for the read-only root, Landlock, and the supplementary groups that
//! grant host resources a user namespace cannot drop.

use super::check::{check, Check, Status};
use super::probe::{self, OverlayDirs};
use crate::paths::existing_ancestor;
use crate::paths::Paths;

/// Groups whose members reach host resources through a socket or a device: inside a
/// user namespace setgroups is denied, so the sandbox keeps them (the kernel checks the
/// real groups), and csbox can only keep what they grant out of reach.
const POWERFUL_GROUPS: &[(&str, &str)] = &[
    (
        "docker",
        "the Docker socket (/run/docker.sock): root on the host",
    ),
    ("podman", "the Podman socket under /run/podman"),
    ("libvirt", "libvirtd's socket under /run/libvirt"),
    (
        "lxd",
        "the LXD socket (/var/snap/lxd/common/lxd, /var/lib/lxd)",
    ),
    ("incus-admin", "the Incus socket (/var/lib/incus)"),
    ("incus", "the Incus socket (/var/lib/incus)"),
    ("kvm", "/dev/kvm"),
    ("disk", "raw disks under /dev"),
];

pub fn checks(paths: &Paths, userns_ok: bool) -> Vec<Check> {
    vec![
        home_overlay_check(paths, userns_ok),
        openat2_check(),
        mount_setattr_check(),
        landlock_check(),
        network_check(paths),
        groups_check(),
    ]
}

/// Profiles that share the host's network: the opt-out is explicit, and said here.
fn network_check(paths: &Paths) -> Check {
    const NAME: &str = "network";
    let dir = paths.user_profiles_dir();
    let host: Vec<String> = crate::profile::list(&dir)
        .into_iter()
        .filter_map(|(name, _, _)| {
            let p = crate::profile::load(&name, &dir).ok()?;
            (p.isolation == crate::profile::Isolation::Namespaces
                && p.network.mode == crate::profile::Network::Host)
                .then_some(name)
        })
        .collect();
    if host.is_empty() {
        check(NAME, Status::Ok, "every sandboxed profile has a network namespace of its own (out only through csbox's proxy, or none)")
    } else {
        check(
            NAME,
            Status::Warn,
            format!("profile(s) {} share the host's network: their sessions reach every host, the host's loopback services and abstract Unix sockets", host.join(", ")),
        )
        .fix("\"network\": \"proxy\" with an allow list, or --net proxy for one run")
    }
}

fn landlock_check() -> Check {
    const NAME: &str = "landlock";
    let abi = crate::sandbox::landlock::abi();
    match abi {
        0 => check(
            NAME,
            Status::Warn,
            "Landlock is not available (Linux < 5.13, or not in the boot's lsm= list): strict's second layer under the mounts is off, and abstract Unix sockets of the host network are reachable where a profile shares it",
        )
        .fix("boot with landlock in lsm= (e.g. lsm=landlock,lockdown,yama,apparmor,bpf), or use a newer kernel"),
        1..=5 => check(
            NAME,
            Status::Warn,
            format!("Landlock ABI {abi}: strict's file-system rules apply, but the abstract-socket and signal scopes need ABI 6 (Linux 6.12): abstract Unix sockets of the host network are reachable where a profile shares it"),
        )
        .fix("Linux ≥ 6.12 for the scopes; until then prefer a profile without the host network"),
        _ => check(
            NAME,
            Status::Ok,
            format!("Landlock ABI {abi}: strict allows writes only beneath its writable mounts (a second layer), and every sandbox is scoped: no connect to an abstract Unix socket or signal outside it"),
        ),
    }
}

fn home_overlay_check(paths: &Paths, userns_ok: bool) -> Check {
    const NAME: &str = "home_overlay";
    if !userns_ok {
        return check(NAME, Status::Warn, "not tried: user namespaces are refused");
    }
    let Some(base) = existing_ancestor(&paths.sessions_dir) else {
        return check(
            NAME,
            Status::Warn,
            "not tried: no existing directory for SESSIONS_DIR",
        );
    };
    let home = &paths.home;
    let probe = match OverlayDirs::new(&base, Some(home.as_path())) {
        Ok(d) => probe::overlay(&d),
        Err(e) => {
            return check(
                NAME,
                Status::Warn,
                format!(
                    "not tried: cannot create a scratch dir in {}: {e}",
                    base.display()
                ),
            )
        }
    };
    match probe {
        Ok(()) => check(
            NAME,
            Status::Ok,
            format!(
                "a copy-on-write home works: an overlay over {} with its upper layer in {}",
                home.display(),
                base.display()
            ),
        ),
        Err(r) => check(
            NAME,
            Status::Warn,
            format!("{r}: sessions get a read-only home with private cache dirs instead (writes to other dotfiles fail)"),
        )
        .fix("Linux ≥ 5.11 with the session store on a local file system (ext4, xfs, btrfs, tmpfs); or SESSIONS_DIR outside your home"),
    }
}

fn openat2_check() -> Check {
    const NAME: &str = "openat2";
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let r = rustix::fs::openat2(
        rustix::fs::CWD,
        "/",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    );
    match r {
        Ok(_) => check(
            NAME,
            Status::Ok,
            "openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) opens session layers without following a link",
        ),
        Err(rustix::io::Errno::NOSYS) => check(
            NAME,
            Status::Warn,
            "openat2 => ENOSYS (Linux < 5.6): session layers are opened one O_NOFOLLOW component at a time instead (as safe, a little slower)",
        ),
        Err(e) => check(NAME, Status::Warn, format!("openat2 => {e}: csbox falls back to O_NOFOLLOW per component")),
    }
}

fn mount_setattr_check() -> Check {
    const NAME: &str = "mount_setattr";
    // SAFETY: an invalid call (fd -1, no path, no attr) that only says whether the
    // system call exists: ENOSYS or EBADF/EINVAL.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            std::ptr::null::<u8>(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    };
    let e = std::io::Error::last_os_error().raw_os_error();
    if r == -1 && e == Some(libc::ENOSYS) {
        check(
            NAME,
            Status::Warn,
            "mount_setattr => ENOSYS (Linux < 5.12): the read-only host is made by remounting each of its mounts one by one (as safe; slower with many mounts)",
        )
    } else {
        check(
            NAME,
            Status::Ok,
            "mount_setattr(AT_RECURSIVE) makes the host read-only in one call",
        )
    }
}

fn groups_check() -> Check {
    const NAME: &str = "groups";
    let groups = nix::unistd::getgroups().unwrap_or_default();
    let mine: Vec<(String, &str)> = groups
        .iter()
        .filter_map(|g| nix::unistd::Group::from_gid(*g).ok().flatten())
        .filter_map(|g| {
            POWERFUL_GROUPS
                .iter()
                .find(|(n, _)| *n == g.name)
                .map(|(_, what)| (g.name.clone(), *what))
        })
        .collect();
    if mine.is_empty() {
        return check(
            NAME,
            Status::Ok,
            "no supplementary group that grants host resources",
        );
    }
    let list: Vec<String> = mine.iter().map(|(g, w)| format!("{g} ({w})")).collect();
    check(
        NAME,
        Status::Warn,
        format!(
            "you are in {}: a user namespace cannot drop supplementary groups (setgroups is denied), so sessions keep them; csbox keeps what they grant out of reach (a private /run, the lxd/incus paths hidden, a minimal /dev)",
            list.join(", ")
        ),
    )
    .fix("a profile that binds such a socket or device back gives that access to the session: do not, or leave the group")
}
