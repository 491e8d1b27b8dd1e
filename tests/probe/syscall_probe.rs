//! A test probe (built as an example, run inside sandboxes by tests/hardening.rs): make
//! each system call the seccomp lists name, with harmless arguments, through the native
//! entry point and (on x86-64) through i386's `int 0x80`, and print what came back.
//!
//! Usage: `syscall-probe ABI [NAME…]` with ABI `native` or `i386`; prints one line per
//! call, `NAME RESULT`, RESULT being `ok` or the errno number; `skip` where the ABI has
//! no such call. The arguments are chosen so that the kernel, if it is reached, fails
//! the call or does nothing (NULL pointers, fd -1, invalid flags): under `--profile
//! compat` the calls reach the kernel unfiltered as an unprivileged user.

use csbox::sandbox::seccomp::{number, Abi};

/// (name, label, arguments). A label tells apart two probes of one call.
const CALLS: &[(&str, &str, [u64; 6])] = &[
    ("add_key", "", [0; 6]),
    ("keyctl", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("request_key", "", [0; 6]),
    ("bpf", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("perf_event_open", "", [0, 0, u64::MAX, u64::MAX, 0, 0]),
    ("userfaultfd", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("io_uring_setup", "", [0; 6]),
    ("io_uring_enter", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("io_uring_register", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("init_module", "", [0; 6]),
    ("finit_module", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("delete_module", "", [0; 6]),
    ("kexec_load", "", [0; 6]),
    ("kexec_file_load", "", [u64::MAX, u64::MAX, 0, 0, 0, 0]),
    ("reboot", "", [0; 6]),
    ("swapon", "", [0; 6]),
    ("swapoff", "", [0; 6]),
    ("acct", "", [0; 6]),
    ("iopl", "", [0; 6]),
    ("ioperm", "", [0; 6]),
    ("settimeofday", "", [0; 6]),
    ("clock_settime", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("clock_settime64", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("stime", "", [0; 6]),
    ("vhangup", "", [0; 6]),
    ("syslog", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("quotactl", "", [0; 6]),
    ("quotactl_fd", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("lookup_dcookie", "", [0; 6]),
    ("open_by_handle_at", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("fanotify_init", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("lsm_get_self_attr", "", [0, 0, 0, u64::MAX, 0, 0]),
    ("lsm_set_self_attr", "", [0, 0, 0, u64::MAX, 0, 0]),
    ("lsm_list_modules", "", [0, 0, u64::MAX, 0, 0, 0]),
    ("mbind", "", [0, 0, u64::MAX, 0, 0, 0]),
    ("set_mempolicy", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("get_mempolicy", "", [0, 0, 0, 0, u64::MAX, 0]),
    ("set_mempolicy_home_node", "", [0, 0, 0, u64::MAX, 0, 0]),
    ("migrate_pages", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("move_pages", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("kcmp", "", [0, 0, u64::MAX, 0, 0, 0]),
    ("pidfd_getfd", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("process_madvise", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("setns", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("chroot", "", [0; 6]),
    ("fsopen", "", [0; 6]),
    ("fsconfig", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("fsmount", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("fspick", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("move_mount", "", [u64::MAX, 0, u64::MAX, 0, 0, 0]),
    ("open_tree", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("open_tree_attr", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("mount_setattr", "", [u64::MAX, 0, 0, 0, 0, 0]),
    ("uselib", "", [0; 6]),
    ("ustat", "", [0; 6]),
    ("sysfs", "", [u64::MAX, 0, 0, 0, 0, 0]),
    // strict only
    ("unshare", "", [0x1, 0, 0, 0, 0, 0]),
    ("mount", "", [0; 6]),
    ("umount", "", [0; 6]),
    ("umount2", "", [0; 6]),
    ("pivot_root", "", [0; 6]),
    ("sethostname", "", [0, u64::MAX, 0, 0, 0, 0]),
    ("setdomainname", "", [0, u64::MAX, 0, 0, 0, 0]),
    ("ptrace", "", [0xdead, 0, 0, 0, 0, 0]),
    ("process_vm_readv", "", [0; 6]),
    ("process_vm_writev", "", [0; 6]),
    ("modify_ldt", "", [0; 6]),
    ("clone3", "", [0; 6]),
    ("listns", "", [0; 6]),
    // argument rules: refused values, and allowed ones that must reach the kernel
    ("ioctl", "tiocsti", [0, 0x5412, 0, 0, 0, 0]),
    ("ioctl", "tiocsti_high_bits", [0, 0x1_0000_5412, 0, 0, 0, 0]),
    ("ioctl", "tioclinux", [0, 0x541C, 0, 0, 0, 0]),
    // On no fd (EBADF when let through): never the test's own terminal.
    ("ioctl", "tiocsetd", [u64::MAX, 0x5423, 0, 0, 0, 0]),
    ("ioctl", "tcxonc", [u64::MAX, 0x540A, 0, 0, 0, 0]),
    ("ioctl", "tiocexcl", [u64::MAX, 0x540C, 0, 0, 0, 0]),
    ("ioctl", "fionread", [u64::MAX, 0x541B, 0, 0, 0, 0]),
    ("socket", "af_alg", [38, 5, 0, 0, 0, 0]),
    ("socket", "af_vsock", [40, 1, 0, 0, 0, 0]),
    (
        "socket",
        "af_vsock_high_bits",
        [0x1_0000_0028, 1, 0, 0, 0, 0],
    ),
    ("socket", "af_packet", [17, 3, 0, 0, 0, 0]),
    ("socket", "af_inet_bad_type", [2, 99, 0, 0, 0, 0]),
    (
        "personality",
        "read_implies_exec",
        [0x40_0000, 0, 0, 0, 0, 0],
    ),
    (
        "personality",
        "addr_no_randomize",
        [0x4_0000, 0, 0, 0, 0, 0],
    ),
    ("personality", "query", [0xffff_ffff, 0, 0, 0, 0, 0]),
    (
        "clone",
        "newns",
        [(libc::CLONE_NEWNS | libc::CLONE_FS) as u64, 0, 0, 0, 0, 0],
    ),
    (
        "clone",
        "newuser",
        [(libc::CLONE_NEWUSER | libc::CLONE_FS) as u64, 0, 0, 0, 0, 0],
    ),
    ("getpid", "", [0; 6]),
];

fn native(nr: u32, a: [u64; 6]) -> i64 {
    // SAFETY: a raw system call with the probe's harmless arguments.
    let r = unsafe { libc::syscall(nr as libc::c_long, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        r
    }
}

/// The call through the i386 entry point (`int 0x80`): arguments in ebx, ecx, edx, esi,
/// edi (32 bits each; the sixth, ebp, cannot be named in inline asm and is left as is).
#[cfg(target_arch = "x86_64")]
fn i386(nr: u32, a: [u64; 6]) -> i64 {
    let mut eax = nr as u64;
    // SAFETY: int 0x80 clobbers only eax (the result); rbx is swapped in and back out
    // because LLVM reserves it.
    unsafe {
        std::arch::asm!(
            "xchg {b}, rbx",
            "int 0x80",
            "xchg {b}, rbx",
            b = inout(reg) a[0] as u32 as u64 => _,
            inout("rax") eax,
            in("rcx") a[1] as u32 as u64,
            in("rdx") a[2] as u32 as u64,
            in("rsi") a[3] as u32 as u64,
            in("rdi") a[4] as u32 as u64,
        );
    }
    eax as u32 as i32 as i64
}

#[cfg(not(target_arch = "x86_64"))]
fn i386(_nr: u32, _a: [u64; 6]) -> i64 {
    -(libc::ENOSYS as i64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let abi = args.first().map(String::as_str).unwrap_or("native");
    let only: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Seccomp:") && !l.ends_with('0'));
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 && !seccomp {
        eprintln!("syscall-probe: refusing to run unfiltered as root (it calls reboot, swapoff, …); run it as an unprivileged user");
        std::process::exit(2);
    }
    let native_abi = if cfg!(target_arch = "aarch64") {
        Abi::Aarch64
    } else {
        Abi::X86_64
    };
    for (name, label, a) in CALLS {
        let key = if label.is_empty() {
            name.to_string()
        } else {
            format!("{name}.{label}")
        };
        if !only.is_empty() && !only.contains(&key.as_str()) && !only.contains(name) {
            continue;
        }
        let (abi_kind, call): (Abi, fn(u32, [u64; 6]) -> i64) = match abi {
            "i386" => (Abi::I386, i386),
            _ => (native_abi, native),
        };
        let Some(nr) = number(name, abi_kind).expect("the table knows the name") else {
            println!("{key} skip");
            continue;
        };
        let r = call(nr, *a);
        if r < 0 {
            println!("{key} {}", -r);
        } else {
            println!("{key} ok");
        }
    }
}
