//! The seccomp filter, as classic BPF.
//!
//! Written by hand rather than with seccompiler: a seccompiler filter checks one
//! architecture and kills every other, but on x86-64 the same ioctl is reachable through
//! three entry points (x86-64, x32 with `__X32_SYSCALL_BIT`, and i386 via int 0x80), and a
//! process may legitimately run 32-bit binaries. This filter checks each entry point and
//! allows everything it does not name.
//!
//! The request number is compared on its low 32 bits only: the tty layer takes `cmd` as an
//! `unsigned int`, so `TIOCSTI | 1<<32` is still TIOCSTI (CVE-2019-10063).

use libc::sock_filter;

const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of args[1] (little-endian).
const OFF_ARG1_LO: u32 = 16 + 8;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// An entry point: its audit arch, its ioctl numbers, and whether it is the native ABI
/// (named syscalls are looked up for the native ABI only; the others can be refused whole).
struct EntryPoint {
    arch: u32,
    ioctls: &'static [u32],
    native: bool,
}

fn entry_points() -> &'static [EntryPoint] {
    if cfg!(target_arch = "x86_64") {
        &[
            // x86-64 ioctl is 16; x32 uses 514 (compat) and may try 16 with the x32 bit. x32
            // shares the x86-64 audit arch, so "refuse compat ABIs" also covers the x32 bit.
            EntryPoint {
                arch: AUDIT_ARCH_X86_64,
                ioctls: &[16, X32_SYSCALL_BIT | 514, X32_SYSCALL_BIT | 16],
                native: true,
            },
            EntryPoint {
                arch: AUDIT_ARCH_I386,
                ioctls: &[54],
                native: false,
            },
        ]
    } else if cfg!(target_arch = "aarch64") {
        &[
            EntryPoint {
                arch: AUDIT_ARCH_AARCH64,
                ioctls: &[29],
                native: true,
            },
            EntryPoint {
                arch: AUDIT_ARCH_ARM,
                ioctls: &[54],
                native: false,
            },
        ]
    } else {
        &[]
    }
}

/// Native syscall numbers for the names a plan may deny.
pub fn syscall_number(name: &str) -> Option<u32> {
    let n = match name {
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "userfaultfd" => libc::SYS_userfaultfd,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "acct" => libc::SYS_acct,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "reboot" => libc::SYS_reboot,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "ptrace" => libc::SYS_ptrace,
        _ => return None,
    };
    Some(n as u32)
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: BPF_JMP | BPF_JEQ | BPF_K,
        jt,
        jf,
        k,
    }
}

/// The filter for a plan: on every entry point of this architecture, `ioctl(fd, req)` fails
/// with `errno` for each `req` in `deny_ioctls`; named syscalls fail with `errno` on the
/// native ABI; with `deny_compat`, every call through a 32-bit ABI fails. Everything else
/// is allowed.
pub fn build_filter(
    deny_ioctls: &[u64],
    deny_syscalls: &[String],
    deny_compat: bool,
    errno: i32,
) -> Result<Vec<sock_filter>, String> {
    let denied: Vec<u32> = deny_syscalls
        .iter()
        .map(|n| syscall_number(n).ok_or_else(|| format!("seccomp: unknown system call {n:?}")))
        .collect::<Result<_, _>>()?;
    let arches = entry_points();
    let ret_allow = stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    let ret_deny = stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (errno as u32 & 0xffff));
    if arches.is_empty() || (deny_ioctls.is_empty() && denied.is_empty() && !deny_compat) {
        return Ok(vec![ret_allow]);
    }
    // Layout:
    //   ld arch; (jeq arch_i -> block_i)*; ret ALLOW
    //   block_i: ret DENY                                   (a refused compat ABI)
    //        or: ld nr; [jeq X32 bit... ]; (jeq ioctl -> CHECK)*; (jeq nr -> DENY)*; ret ALLOW
    //   CHECK: ld arg1_lo; (jeq req -> DENY)*; ret ALLOW
    //   DENY: ret ERRNO
    let refused = |e: &EntryPoint| deny_compat && !e.native;
    let x32_guard = deny_compat && cfg!(target_arch = "x86_64");
    let block_len = |e: &EntryPoint| {
        if refused(e) {
            1
        } else {
            let guard = if e.native && x32_guard { 2 } else { 0 };
            1 + guard + e.ioctls.len() + if e.native { denied.len() } else { 0 } + 1
        }
    };
    let n_arch = arches.len();
    let check_start = 1 + n_arch + 1 + arches.iter().map(block_len).sum::<usize>();
    let deny_at = check_start + 1 + deny_ioctls.len() + 1;
    let jump = |from: usize, to: usize| -> Result<u8, String> {
        u8::try_from(to - from - 1).map_err(|_| "seccomp: filter too long".to_string())
    };

    let mut prog = vec![stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH)];
    let mut block_start = 1 + n_arch + 1;
    for (i, e) in arches.iter().enumerate() {
        prog.push(jeq(e.arch, jump(1 + i, block_start)?, 0));
        block_start += block_len(e);
    }
    prog.push(ret_allow);
    for e in arches {
        if refused(e) {
            prog.push(ret_deny);
            continue;
        }
        prog.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR));
        if e.native && x32_guard {
            // nr >= X32_SYSCALL_BIT: an x32 call; refused as a compat ABI.
            let here = prog.len();
            prog.push(sock_filter {
                code: BPF_JMP | 0x30 /* JGE */ | BPF_K,
                jt: jump(here, deny_at)?,
                jf: 0,
                k: X32_SYSCALL_BIT,
            });
            prog.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR));
        }
        for nr in e.ioctls.iter() {
            let here = prog.len();
            prog.push(jeq(*nr, jump(here, check_start)?, 0));
        }
        if e.native {
            for nr in &denied {
                let here = prog.len();
                prog.push(jeq(*nr, jump(here, deny_at)?, 0));
            }
        }
        prog.push(ret_allow);
    }
    debug_assert_eq!(prog.len(), check_start);
    prog.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARG1_LO));
    for req in deny_ioctls {
        let here = prog.len();
        prog.push(jeq(*req as u32, jump(here, deny_at)?, 0));
    }
    prog.push(ret_allow);
    debug_assert_eq!(prog.len(), deny_at);
    prog.push(ret_deny);
    Ok(prog)
}

/// The default filter: TIOCSTI/TIOCLINUX denied, nothing else.
pub fn ioctl_deny_filter(deny: &[u64], errno: i32) -> Vec<sock_filter> {
    build_filter(deny, &[], false, errno).expect("no names to look up")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the subset we emit, to test the filter as data.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, arg1: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[24..32].copy_from_slice(&arg1.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            match i.code {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += 1 + if acc == i.k {
                        i.jt as usize
                    } else {
                        i.jf as usize
                    };
                }
                c if c == BPF_JMP | 0x30 | BPF_K => {
                    pc += 1 + if acc >= i.k {
                        i.jt as usize
                    } else {
                        i.jf as usize
                    };
                }
                c if c == BPF_RET | BPF_K => return i.k,
                c => panic!("unexpected op {c:#x}"),
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn tiocsti_is_denied_on_every_x86_entry_point_and_masked_to_32_bits() {
        let p = ioctl_deny_filter(&[0x5412, 0x541C], libc::EPERM);
        let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 16, 0x5412), deny);
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, 16, 0x1_0000_5412),
            deny,
            "high bits ignored"
        );
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 16, 0x541C), deny);
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 514, 0x5412),
            deny
        );
        assert_eq!(run(&p, AUDIT_ARCH_I386, 54, 0x5412), deny);
        // everything else passes
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, 16, 0x5413),
            SECCOMP_RET_ALLOW,
            "TIOCGWINSZ"
        );
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, 1, 0x5412),
            SECCOMP_RET_ALLOW,
            "write(2) with that arg"
        );
        assert_eq!(
            run(&p, AUDIT_ARCH_I386, 16, 0x5412),
            SECCOMP_RET_ALLOW,
            "i386 nr 16 is lchown"
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn strict_denies_named_calls_and_every_compat_abi() {
        let names: Vec<String> = crate::plan::STRICT_DENY
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = build_filter(&[0x5412], &names, true, libc::EPERM).unwrap();
        let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, libc::SYS_bpf as u32, 0), deny);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, libc::SYS_keyctl as u32, 0), deny);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 16, 0x5412), deny);
        assert_eq!(run(&p, AUDIT_ARCH_I386, 3, 0), deny, "i386 read(2) refused");
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, 0),
            deny,
            "x32 read(2) refused"
        );
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, libc::SYS_read as u32, 0),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, libc::SYS_clone as u32, 0),
            SECCOMP_RET_ALLOW
        );
        assert!(build_filter(&[], &["no_such_call".into()], false, 1).is_err());
    }

    #[test]
    fn empty_deny_list_allows_all() {
        let p = ioctl_deny_filter(&[], libc::EPERM);
        assert_eq!(p.len(), 1);
    }
}
