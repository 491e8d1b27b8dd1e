//! What a profile's seccomp level refuses, as plan rules. The launcher compiles them to
//! BPF for every entry point (`sandbox/seccomp.rs`), `csbox spec` writes them as OCI
//! `linux.seccomp`; neither adds or drops a call.
//!
//! `default` refuses what Docker's default profile refuses to a container without added
//! capabilities (moby `profiles/seccomp/default.json`), with three exceptions kept for
//! usefulness: nested namespaces and the mounts bubblewrap makes in them (`clone`/
//! `unshare` with `CLONE_NEW*`, `mount`, `umount2`, `pivot_root`, `sethostname`), because
//! Claude Code's own `/sandbox` runs bubblewrap inside the session; and `ptrace` with
//! `process_vm_readv/writev`, which Docker allows too (kernel >= 4.8) and which reach only
//! the sandbox's own processes (its own pid namespace, no capability), so debuggers and
//! `strace` work. On top of Docker it refuses io_uring (as Docker does since 2023),
//! the keyrings, and `socket(AF_ALG | AF_VSOCK)` compared on 32 bits. `strict` adds no
//! new namespaces of any kind, no mount at all, no tracing, and no 32-bit entry point.

use super::model::{ArgMatch, Seccomp, SyscallRule};
use crate::profile::{Profile, SeccompLevel};

/// Refused with EPERM under `default` (and `strict`), by reason.
pub const DEFAULT_EPERM: &[&str] = &[
    // Kernel keyrings: the session keyring is fresh, and no key can be made or asked for
    // (Docker: absent from its allow list; Flatpak).
    "add_key",
    "keyctl",
    "request_key",
    // eBPF, perf, userfaultfd, io_uring: large kernel surfaces behind many CVEs (Docker
    // gates bpf/perf on CAP_SYS_ADMIN/CAP_BPF/CAP_PERFMON, leaves out userfaultfd and
    // io_uring).
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Modules, kexec, reboot, swap, process accounting.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    // I/O ports, the clocks, hanging up the terminal.
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_settime64",
    "stime",
    "vhangup",
    // The kernel log, quotas, handle-based opens (the "shocker" escape), fanotify, LSM
    // attributes.
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "open_by_handle_at",
    "fanotify_init",
    "lsm_get_self_attr",
    "lsm_set_self_attr",
    "lsm_list_modules",
    // NUMA memory policy and page migration (Docker: CAP_SYS_NICE).
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "set_mempolicy_home_node",
    "migrate_pages",
    "move_pages",
    // Comparing and stealing other processes' files and memory advice (Docker:
    // CAP_SYS_PTRACE).
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    // Joining another namespace, chroot (bubblewrap needs neither).
    "setns",
    "chroot",
];

/// Refused with ENOSYS under `default`: callers fall back (libmount to mount(2)).
pub const DEFAULT_ENOSYS: &[&str] = &[
    // The new mount API (Flatpak; fsconfig was CVE-2022-0185 from a user namespace).
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "mount_setattr",
    // Obsolete calls a kernel may still carry.
    "uselib",
    "ustat",
    "sysfs",
];

/// Refused with EPERM under `strict`, on top of `default`.
pub const STRICT_EPERM: &[&str] = &[
    // No namespaces and no mounts at all.
    "unshare",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "sethostname",
    "setdomainname",
    // No tracing, not even of the sandbox's own processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    // The x86 local descriptor table (Flatpak refuses it to native-only apps).
    "modify_ldt",
];

/// Refused with ENOSYS under `strict`, on top of `default`.
pub const STRICT_ENOSYS: &[&str] = &[
    // Its flags live in memory seccomp cannot read: ENOSYS makes libc fall back to
    // clone(2), whose flags the rule below sees.
    "clone3", // Enumerating namespaces (new in 6.19).
    "listns",
];

pub const TIOCSTI: u32 = 0x5412;
pub const TIOCLINUX: u32 = 0x541C;
/// Sets the terminal's line discipline (N_NULL swallows everything, after csbox too).
pub const TIOCSETD: u32 = 0x5423;
/// tcflow(3): TCOOFF suspends the terminal's output until a TCOON nobody sends.
pub const TCXONC: u32 = 0x540A;
/// Exclusive mode: nobody else may open the terminal (the shell's `sudo`, `ssh`, `gpg`
/// prompts read /dev/tty), which outlives the session (red-team 4, A4-4).
pub const TIOCEXCL: u32 = 0x540C;
const AF_ALG: u32 = 38;
const AF_VSOCK: u32 = 40;
/// The personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26 with either, and the
/// query. Everything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, foreign exec domains) is
/// refused.
pub const PERSONAS: &[u32] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];
/// Socket families `strict` allows: AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6, AF_NETLINK.
pub const STRICT_FAMILIES: &[u32] = &[0, 1, 2, 10, 16];
/// Every CLONE_NEW* flag clone(2) takes (Docker's mask): NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET.
pub const CLONE_NEW_ANY: u32 = 0x7E02_0000;

fn rule(names: &[&str], errno: i32, arg: Option<ArgMatch>) -> SyscallRule {
    SyscallRule {
        names: names.iter().map(|s| s.to_string()).collect(),
        errno,
        arg,
    }
}

fn masked_eq(index: u8, mask: u32, value: u32) -> Option<ArgMatch> {
    Some(ArgMatch::MaskedEq { index, mask, value })
}

/// ioctl(fd, TIOCSTI | TIOCLINUX) refused with EPERM, on the low 32 bits of the request:
/// nothing inside can type into the user's terminal (CVE-2017-5226); nor can it leave
/// the terminal dead after it (TIOCSETD to N_NULL, TCXONC to TCOOFF: red-team 3, A3-16;
/// TIOCEXCL),
/// which no TUI needs (they set modes with TCSETS*, which stay).
pub fn terminal_rules() -> Vec<SyscallRule> {
    [TIOCSTI, TIOCLINUX, TIOCSETD, TCXONC, TIOCEXCL]
        .iter()
        .map(|req| rule(&["ioctl"], libc::EPERM, masked_eq(1, u32::MAX, *req)))
        .collect()
}

/// The seccomp rules of a profile (none without a sandbox).
pub fn rules(prof: &Profile, sandboxed: bool) -> Seccomp {
    if !sandboxed {
        return Seccomp {
            rules: Vec::new(),
            deny_compat_abis: false,
        };
    }
    let strict = prof.seccomp == SeccompLevel::Strict;
    let (eperm, enosys) = (libc::EPERM, libc::ENOSYS);
    let mut rules = terminal_rules();
    rules.push(rule(DEFAULT_EPERM, eperm, None));
    rules.push(rule(DEFAULT_ENOSYS, enosys, None));
    rules.push(rule(
        &["personality"],
        eperm,
        Some(ArgMatch::NotIn {
            index: 0,
            values: PERSONAS.to_vec(),
        }),
    ));
    if strict {
        rules.push(rule(STRICT_EPERM, eperm, None));
        rules.push(rule(STRICT_ENOSYS, enosys, None));
        rules.push(rule(
            &["clone"],
            eperm,
            Some(ArgMatch::AnyBit {
                index: 0,
                mask: CLONE_NEW_ANY,
            }),
        ));
        let families = ArgMatch::NotIn {
            index: 0,
            values: STRICT_FAMILIES.to_vec(),
        };
        rules.push(rule(&["socket"], libc::EAFNOSUPPORT, Some(families)));
    } else {
        for family in [AF_ALG, AF_VSOCK] {
            rules.push(rule(
                &["socket"],
                libc::EAFNOSUPPORT,
                masked_eq(0, u32::MAX, family),
            ));
        }
        if !prof.nested_userns {
            let newuser = libc::CLONE_NEWUSER as u32;
            for name in ["unshare", "clone"] {
                rules.push(rule(&[name], eperm, masked_eq(0, newuser, newuser)));
            }
            rules.push(rule(&["clone3"], enosys, None));
        }
    }
    Seccomp {
        rules,
        deny_compat_abis: strict,
    }
}
