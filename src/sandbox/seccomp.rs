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

/// (audit arch, ioctl syscall numbers through that entry point).
fn ioctl_entry_points() -> &'static [(u32, &'static [u32])] {
    if cfg!(target_arch = "x86_64") {
        &[
            // x86-64 ioctl is 16; x32 uses 514 (compat) and may try 16 with the x32 bit.
            (
                AUDIT_ARCH_X86_64,
                &[16, X32_SYSCALL_BIT | 514, X32_SYSCALL_BIT | 16],
            ),
            (AUDIT_ARCH_I386, &[54]),
        ]
    } else if cfg!(target_arch = "aarch64") {
        &[(AUDIT_ARCH_AARCH64, &[29]), (AUDIT_ARCH_ARM, &[54])]
    } else {
        &[]
    }
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

/// A filter that makes `ioctl(fd, req)` fail with `errno` for each `req` in `deny`, on every
/// ioctl entry point of this architecture, and allows everything else.
pub fn ioctl_deny_filter(deny: &[u64], errno: i32) -> Vec<sock_filter> {
    let arches = ioctl_entry_points();
    let mut prog = Vec::new();
    if deny.is_empty() || arches.is_empty() {
        prog.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        return prog;
    }
    // Layout:
    //   ld arch; (jeq arch_i -> block_i)*; ret ALLOW
    //   block_i: ld nr; (jeq nr_ij -> CHECK)*; ret ALLOW
    //   CHECK: ld arg1_lo; (jeq req_k -> DENY)*; ret ALLOW
    //   DENY: ret ERRNO
    let n_arch = arches.len();
    let block_len = |nrs: &[u32]| 1 + nrs.len() + 1;
    let blocks_total: usize = arches.iter().map(|(_, n)| block_len(n)).sum();
    let check_start = 1 + n_arch + 1 + blocks_total;
    let deny_at = check_start + 1 + deny.len() + 1;

    prog.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH));
    let mut block_start = 1 + n_arch + 1;
    for (i, (arch, nrs)) in arches.iter().enumerate() {
        let here = 1 + i; // index of this jeq
        prog.push(jeq(*arch, (block_start - here - 1) as u8, 0));
        block_start += block_len(nrs);
    }
    prog.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    for (_, nrs) in arches {
        prog.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR));
        for nr in nrs.iter() {
            let here = prog.len();
            prog.push(jeq(*nr, (check_start - here - 1) as u8, 0));
        }
        prog.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    debug_assert_eq!(prog.len(), check_start);
    prog.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARG1_LO));
    for req in deny {
        let here = prog.len();
        prog.push(jeq(*req as u32, (deny_at - here - 1) as u8, 0));
    }
    prog.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    debug_assert_eq!(prog.len(), deny_at);
    prog.push(stmt(
        BPF_RET | BPF_K,
        SECCOMP_RET_ERRNO | (errno as u32 & 0xffff),
    ));
    prog
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
    fn empty_deny_list_allows_all() {
        let p = ioctl_deny_filter(&[], libc::EPERM);
        assert_eq!(p.len(), 1);
    }
}
