//! The plan's seccomp rules as a classic BPF program.
//!
//! Written by hand rather than with seccompiler: a seccompiler filter checks one
//! architecture and kills every other, but on x86-64 the same ioctl is reachable through
//! three entry points (x86-64, x32 with `__X32_SYSCALL_BIT`, and i386 via int 0x80), and a
//! process may legitimately run 32-bit binaries. This filter checks each entry point and
//! allows everything it does not name; a refused call fails with the rule's errno.
//!
//! Arguments are compared on their low 32 bits only: the tty layer takes an ioctl's `cmd`
//! as an `unsigned int`, so `TIOCSTI | 1<<32` is still TIOCSTI (CVE-2019-10063), and
//! clone/unshare read their flags as 32-bit values too.

use libc::sock_filter;

use crate::plan::{Seccomp, SyscallRule};

const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of args[i] (little-endian).
const fn off_arg_lo(i: u8) -> u32 {
    16 + 8 * i as u32
}

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A rule names a system call this filter cannot find on the native ABI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seccomp: unknown system call {0:?} on this architecture")]
pub struct UnknownSyscall(pub String);

/// An entry point: its audit arch, and whether it is the native ABI. Named calls are
/// looked up for the native ABI; on the 32-bit ones only `ioctl` is known (the TIOCSTI
/// rules), and under `deny_compat_abis` they are refused whole.
struct EntryPoint {
    arch: u32,
    native: bool,
}

fn entry_points() -> &'static [EntryPoint] {
    if cfg!(target_arch = "x86_64") {
        // x32 shares the x86-64 audit arch: its calls are told apart by the x32 bit.
        &[
            EntryPoint {
                arch: AUDIT_ARCH_X86_64,
                native: true,
            },
            EntryPoint {
                arch: AUDIT_ARCH_I386,
                native: false,
            },
        ]
    } else if cfg!(target_arch = "aarch64") {
        &[
            EntryPoint {
                arch: AUDIT_ARCH_AARCH64,
                native: true,
            },
            EntryPoint {
                arch: AUDIT_ARCH_ARM,
                native: false,
            },
        ]
    } else {
        &[]
    }
}

/// The numbers a name has on an entry point (several for ioctl on x86-64: native, and
/// x32's compat and native-numbered forms).
fn numbers(name: &str, e: &EntryPoint) -> Result<Vec<u32>, UnknownSyscall> {
    if !e.native {
        // i386 and arm32 both number ioctl 54.
        return Ok(if name == "ioctl" { vec![54] } else { vec![] });
    }
    if name == "ioctl" && cfg!(target_arch = "x86_64") {
        return Ok(vec![
            libc::SYS_ioctl as u32,
            X32_SYSCALL_BIT | 514,
            X32_SYSCALL_BIT | libc::SYS_ioctl as u32,
        ]);
    }
    syscall_number(name)
        .map(|n| vec![n])
        .ok_or_else(|| UnknownSyscall(name.to_string()))
}

/// Native syscall numbers for the names a plan may refuse.
pub fn syscall_number(name: &str) -> Option<u32> {
    let n = match name {
        "ioctl" => libc::SYS_ioctl,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "unshare" => libc::SYS_unshare,
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

fn jump(op: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: BPF_JMP | op | BPF_K,
        jt,
        jf,
        k,
    }
}

fn ret_errno(errno: i32) -> sock_filter {
    stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (errno as u32 & 0xffff))
}

/// One rule for one syscall number, with `acc` holding the number on entry and on exit.
fn emit_rule(prog: &mut Vec<sock_filter>, nr: u32, rule: &SyscallRule) {
    let load_nr = stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR);
    match rule.arg {
        None => {
            prog.push(jump(BPF_JEQ, nr, 0, 1));
            prog.push(ret_errno(rule.errno));
        }
        Some(a) => {
            // Not this call: skip to the reload (acc is still nr). This call, but the
            // argument does not match: skip the return, reload nr for the next rule.
            prog.push(jump(BPF_JEQ, nr, 0, 4));
            prog.push(stmt(BPF_LD | BPF_W | BPF_ABS, off_arg_lo(a.index)));
            prog.push(stmt(BPF_ALU | BPF_AND | BPF_K, a.mask));
            prog.push(jump(BPF_JEQ, a.value, 0, 1));
            prog.push(ret_errno(rule.errno));
            prog.push(load_nr);
        }
    }
}

/// The filter for a plan's rules (see the module doc). Everything not named is allowed.
pub fn build_filter(sc: &Seccomp) -> Result<Vec<sock_filter>, UnknownSyscall> {
    let ret_allow = stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    let arches = entry_points();
    if arches.is_empty() || (sc.rules.is_empty() && !sc.deny_compat_abis) {
        return Ok(vec![ret_allow]);
    }
    let mut blocks: Vec<Vec<sock_filter>> = Vec::new();
    for e in arches {
        let mut b = Vec::new();
        if sc.deny_compat_abis && !e.native {
            b.push(ret_errno(libc::EPERM));
            blocks.push(b);
            continue;
        }
        b.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR));
        if e.native && sc.deny_compat_abis && cfg!(target_arch = "x86_64") {
            // nr >= X32_SYSCALL_BIT: an x32 call, refused as a compat ABI.
            b.push(jump(BPF_JGE, X32_SYSCALL_BIT, 0, 1));
            b.push(ret_errno(libc::EPERM));
        }
        for rule in &sc.rules {
            for name in &rule.names {
                for nr in numbers(name, e)? {
                    emit_rule(&mut b, nr, rule);
                }
            }
        }
        b.push(ret_allow);
        blocks.push(b);
    }
    // ld arch; (jeq arch_i -> block_i)*; ret ALLOW; block_0; block_1; ...
    let mut prog = vec![stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH)];
    let n = arches.len();
    let mut start = 1 + n + 1; // first block's index
    for (i, e) in arches.iter().enumerate() {
        let here = 1 + i;
        let off = u8::try_from(start - here - 1).expect("a dispatch jump fits in 8 bits");
        prog.push(jump(BPF_JEQ, e.arch, off, 0));
        start += blocks[i].len();
    }
    prog.push(ret_allow);
    for b in blocks {
        prog.extend(b);
    }
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ArgMatch;

    /// A tiny classic-BPF interpreter for the subset we emit, to test the filter as data.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 2]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&args[0].to_le_bytes());
        data[24..32].copy_from_slice(&args[1].to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            let cond = |c: bool| 1 + if c { i.jt as usize } else { i.jf as usize };
            match i.code {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == BPF_ALU | BPF_AND | BPF_K => {
                    acc &= i.k;
                    pc += 1;
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => pc += cond(acc == i.k),
                c if c == BPF_JMP | BPF_JGE | BPF_K => pc += cond(acc >= i.k),
                c if c == BPF_RET | BPF_K => return i.k,
                c => panic!("unexpected op {c:#x}"),
            }
        }
    }

    fn ioctl_rules() -> Vec<SyscallRule> {
        [0x5412u32, 0x541C]
            .iter()
            .map(|r| SyscallRule {
                names: vec!["ioctl".into()],
                errno: libc::EPERM,
                arg: Some(ArgMatch {
                    index: 1,
                    mask: u32::MAX,
                    value: *r,
                }),
            })
            .collect()
    }

    const DENY: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn tiocsti_is_denied_on_every_x86_entry_point_and_masked_to_32_bits() {
        let p = build_filter(&Seccomp {
            rules: ioctl_rules(),
            deny_compat_abis: false,
        })
        .unwrap();
        let x64 = AUDIT_ARCH_X86_64;
        assert_eq!(run(&p, x64, 16, [0, 0x5412]), DENY);
        assert_eq!(
            run(&p, x64, 16, [0, 0x1_0000_5412]),
            DENY,
            "high bits ignored"
        );
        assert_eq!(run(&p, x64, 16, [0, 0x541C]), DENY);
        assert_eq!(run(&p, x64, X32_SYSCALL_BIT | 514, [0, 0x5412]), DENY);
        assert_eq!(run(&p, AUDIT_ARCH_I386, 54, [0, 0x5412]), DENY);
        assert_eq!(
            run(&p, x64, 16, [0, 0x5413]),
            SECCOMP_RET_ALLOW,
            "TIOCGWINSZ"
        );
        assert_eq!(run(&p, x64, 1, [0, 0x5412]), SECCOMP_RET_ALLOW, "write(2)");
        assert_eq!(
            run(&p, AUDIT_ARCH_I386, 16, [0, 0x5412]),
            SECCOMP_RET_ALLOW,
            "i386 nr 16 is lchown"
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn named_calls_arg_rules_and_compat_abis_are_refused_with_their_errno() {
        let mut rules = ioctl_rules();
        rules.push(SyscallRule {
            names: crate::plan::STRICT_DENY
                .iter()
                .map(|s| s.to_string())
                .collect(),
            errno: libc::EPERM,
            arg: None,
        });
        let newuser = libc::CLONE_NEWUSER as u32;
        rules.push(SyscallRule {
            names: vec!["unshare".into()],
            errno: libc::EPERM,
            arg: Some(ArgMatch {
                index: 0,
                mask: newuser,
                value: newuser,
            }),
        });
        rules.push(SyscallRule {
            names: vec!["clone3".into()],
            errno: libc::ENOSYS,
            arg: None,
        });
        let p = build_filter(&Seccomp {
            rules,
            deny_compat_abis: true,
        })
        .unwrap();
        let x64 = AUDIT_ARCH_X86_64;
        let nr = |n: libc::c_long| n as u32;
        assert_eq!(run(&p, x64, nr(libc::SYS_bpf), [0, 0]), DENY);
        assert_eq!(run(&p, x64, nr(libc::SYS_keyctl), [0, 0]), DENY);
        assert_eq!(run(&p, x64, 16, [0, 0x5412]), DENY);
        let unshare = nr(libc::SYS_unshare);
        let u = newuser as u64;
        assert_eq!(run(&p, x64, unshare, [u | 0x2_0000, 0]), DENY);
        assert_eq!(run(&p, x64, unshare, [u << 32, 0]), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, x64, unshare, [0x2_0000, 0]), SECCOMP_RET_ALLOW);
        assert_eq!(
            run(&p, x64, nr(libc::SYS_clone3), [0, 0]),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(run(&p, AUDIT_ARCH_I386, 3, [0, 0]), DENY, "i386 read(2)");
        assert_eq!(run(&p, x64, X32_SYSCALL_BIT, [0, 0]), DENY, "x32 read(2)");
        assert_eq!(run(&p, x64, nr(libc::SYS_read), [0, 0]), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, x64, nr(libc::SYS_clone), [0, 0]), SECCOMP_RET_ALLOW);
    }

    #[test]
    fn an_unknown_name_is_an_error_and_no_rules_allow_all() {
        let bad = Seccomp {
            rules: vec![SyscallRule {
                names: vec!["no_such_call".into()],
                errno: 1,
                arg: None,
            }],
            deny_compat_abis: false,
        };
        assert_eq!(
            build_filter(&bad),
            Err(UnknownSyscall("no_such_call".into()))
        );
        let none = Seccomp {
            rules: vec![],
            deny_compat_abis: false,
        };
        assert_eq!(build_filter(&none).unwrap().len(), 1);
    }
}
