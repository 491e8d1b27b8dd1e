//! The vocabulary between `prepare` and the child: the system-level steps, how each
//! source is opened, and everything the child needs, already as C strings.

use std::ffi::CString;
use std::os::fd::RawFd;

use libc::c_ulong;

/// What a mount step makes, for the error message and hints of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Propagation,
    Overlay,
    Bind,
    Tmpfs,
    Devpts,
    Proc,
    Sysfs,
}

/// One system-level step of the child's setup.
#[derive(Debug)]
pub enum Step {
    Mount {
        kind: MountKind,
        src: Option<CString>,
        dst: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
    },
    /// mount_setattr(dst, MOUNT_ATTR_* in `attr`), recursively or not; without
    /// mount_setattr (Linux < 5.12), a remount of `dst` alone that keeps its locked flags.
    SetAttr {
        dst: CString,
        attr: u64,
        recursive: bool,
    },
    /// mkdir, EEXIST is fine.
    Mkdir {
        path: CString,
        mode: u32,
    },
    /// Create an empty file as a mount point, EEXIST is fine (O_EXCL: never opens, and so
    /// never copies up, an existing overlay file).
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Chmod {
        path: CString,
        mode: u32,
    },
    /// ioctl(SIOCSIFFLAGS) IFF_UP on "lo" in the new network namespace.
    LoopbackUp,
    /// pivot_root(new_root, put_old), then chdir("/"): every later path is resolved in
    /// the sandbox's root, while the host's tree (where the sources are) stays attached
    /// at `put_old` until [`Step::DetachHost`].
    PivotRoot {
        new_root: CString,
        put_old: CString,
    },
    /// umount2(path, MNT_DETACH) and rmdir: the host's tree leaves the mount namespace,
    /// so nothing inside (a nested user namespace included) can reach it.
    DetachHost {
        path: CString,
    },
}

/// How the child opens one source before any mount.
#[derive(Debug)]
pub enum SourceSpec {
    /// A host path, opened O_PATH following symlinks (the user's own paths, resolved).
    Host(CString),
    /// A path in the session directory (`sources[base]`, a directory), opened with
    /// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), or one
    /// O_NOFOLLOW component at a time where openat2 is missing; it must be a directory
    /// or a regular file. A symlink or a FIFO planted in a layer fails the launch.
    Beneath {
        base: usize,
        rel: CString,
        components: Vec<CString>,
    },
}

/// Where the sandbox's root is assembled before the pivot, and where the host's tree
/// waits inside it until it is detached.
pub const STAGING: &str = "/tmp";
pub const NEW_ROOT: &str = "/tmp/root";
pub const HOST_AT: &str = "/tmp/.csbox-host";

/// mount_setattr(2) attribute bits.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

pub struct Prepared {
    pub steps: Vec<Step>,
    /// A human description of each step, for the one-line error.
    pub descs: Vec<String>,
    /// Per step: a missing path (ENOENT) is not a failure (a hidden path, a socket, gone
    /// since the plan was made: nothing to hide).
    pub missing_ok: Vec<bool>,
    /// (how, fd number): opened by the child first, O_PATH, at exactly that number.
    pub sources: Vec<(SourceSpec, RawFd)>,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub exe: CString,
    pub argv: Vec<CString>,
    pub argv_ptrs: Vec<*const libc::c_char>,
    pub envp: Vec<CString>,
    pub envp_ptrs: Vec<*const libc::c_char>,
    pub cwd: CString,
    pub filter: Vec<libc::sock_filter>,
    /// CSBOX_TRACE's page shared with the supervisor (null when tracing is off).
    pub trace_page: *mut u64,
    /// The port pid 1's relay listens on, for a proxied network.
    pub relay_port: Option<u16>,
    /// Landlock rules the command's process restricts itself with, if the kernel has it.
    pub landlock: Option<super::landlock::Prepared>,
    pub clone_flags: libc::c_int,
    /// (resource, value) set soft and hard on the command before exec.
    pub rlimits: Vec<(u32, u64)>,
    /// Written to /proc/sys/user/max_user_namespaces once /proc is ours.
    pub max_user_namespaces: Option<Vec<u8>>,
    /// Written to /proc/sys/user/max_inotify_instances and max_inotify_watches there too.
    pub inotify_limits: Option<(Vec<u8>, Vec<u8>)>,
    pub no_new_privs: bool,
    pub die_with_parent: bool,
    pub new_session_keyring: bool,
    /// Capabilities the command keeps; every other one is dropped.
    pub keep_caps: Vec<caps::Capability>,
    /// Every capability this kernel knows but the kept ones: dropped from the bounding set.
    pub drop_bounding: Vec<caps::Capability>,
}

/// Where the child failed. Sent over the error pipe as one u32 ([`FailedAt::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedAt {
    /// `Prepared::steps[i]`.
    Step(u32),
    /// Opening `Prepared::sources[k]`.
    Source(u32),
    /// Setting `Prepared::rlimits[k]`.
    Rlimit(u32),
    /// The Landlock rule for `Prepared::landlock.writable[k]`.
    LandlockPath(u32),
    Phase(Phase),
}

/// The setup phases that are not a numbered step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Phase {
    /// The supervisor died before the child could start.
    ParentGone = 0,
    IdMaps = 1,
    UsernsLimit = 2,
    Chdir = 3,
    Capabilities = 4,
    NoNewPrivs = 5,
    Fork = 6,
    Seccomp = 7,
    Exec = 8,
    Keyring = 9,
    /// Creating or applying the Landlock ruleset.
    Landlock = 10,
    /// Listening for the proxy on 127.0.0.1/::1 inside.
    Relay = 11,
    /// Writing the sandbox's own inotify bounds.
    InotifyLimits = 12,
}

pub(crate) const PHASES: [Phase; 13] = [
    Phase::ParentGone,
    Phase::IdMaps,
    Phase::UsernsLimit,
    Phase::Chdir,
    Phase::Capabilities,
    Phase::NoNewPrivs,
    Phase::Fork,
    Phase::Seccomp,
    Phase::Exec,
    Phase::Keyring,
    Phase::Landlock,
    Phase::Relay,
    Phase::InotifyLimits,
];

const TAG_SHIFT: u32 = 24;
const TAG_STEP: u32 = 0;
const TAG_SOURCE: u32 = 1;
const TAG_RLIMIT: u32 = 2;
const TAG_PHASE: u32 = 3;
const TAG_LANDLOCK: u32 = 4;

impl FailedAt {
    pub fn code(self) -> u32 {
        let (tag, n) = match self {
            FailedAt::Step(i) => (TAG_STEP, i),
            FailedAt::Source(k) => (TAG_SOURCE, k),
            FailedAt::Rlimit(k) => (TAG_RLIMIT, k),
            FailedAt::Phase(p) => (TAG_PHASE, p as u32),
            FailedAt::LandlockPath(k) => (TAG_LANDLOCK, k),
        };
        tag << TAG_SHIFT | (n & ((1 << TAG_SHIFT) - 1))
    }

    pub fn decode(code: u32) -> Option<FailedAt> {
        let n = code & ((1 << TAG_SHIFT) - 1);
        match code >> TAG_SHIFT {
            TAG_STEP => Some(FailedAt::Step(n)),
            TAG_SOURCE => Some(FailedAt::Source(n)),
            TAG_RLIMIT => Some(FailedAt::Rlimit(n)),
            TAG_PHASE => PHASES.get(n as usize).map(|p| FailedAt::Phase(*p)),
            TAG_LANDLOCK => Some(FailedAt::LandlockPath(n)),
            _ => None,
        }
    }
}

/// The namespace files pid 1 opens and sends, in this order (`csbox enter` joins them).
pub const NS_FILES: [&[u8]; 6] = [
    b"/proc/self/ns/user\0",
    b"/proc/self/ns/mnt\0",
    b"/proc/self/ns/pid\0",
    b"/proc/self/ns/ipc\0",
    b"/proc/self/ns/uts\0",
    b"/proc/self/ns/net\0",
];

/// The supervisor's view of the signals it forwards; the child waits on the same set.
pub struct Fds {
    pub err_w: RawFd,
    pub status_w: RawFd,
    /// Pid 1's end of the proxy's socket pair; -1 without a proxied network.
    pub relay: RawFd,
    /// Pid 1's end of the socket pair its namespace fds go out on (for `csbox enter`).
    pub ns_w: RawFd,
    /// Signals blocked and waited for by pid 1.
    pub wait_set: libc::sigset_t,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_place_round_trips_through_its_code() {
        let mut all: Vec<FailedAt> = PHASES.iter().map(|p| FailedAt::Phase(*p)).collect();
        all.extend([
            FailedAt::Step(0),
            FailedAt::Step(77),
            FailedAt::Source(3),
            FailedAt::Rlimit(1),
            FailedAt::LandlockPath(2),
        ]);
        for at in all {
            assert_eq!(FailedAt::decode(at.code()), Some(at), "{at:?}");
        }
        assert_eq!(FailedAt::decode(0xFFFF_0008), None, "an old-style code");
    }
}
