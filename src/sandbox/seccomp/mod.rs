//! The plan's seccomp rules as a classic BPF program, compiled here.
//!
//! Why not libseccomp or seccompiler (measured: /work/notes/seccomp.md in the project's
//! history, and the README's Hardening section):
//! - On x86-64 the same call is reachable through three entry points (x86-64, x32 with
//!   `__X32_SYSCALL_BIT`, i386 through `int 0x80`), and a process may legitimately run
//!   32-bit programs. seccompiler checks one architecture, kills i386 callers and lets x32
//!   callers through unchecked.
//! - libseccomp (Debian 12 has 2.5.4) cannot name the calls newer than its table
//!   (`lsm_*`, `open_tree_attr`, `listns`), and refuses raw numbers on a multi-arch
//!   filter; one comparison per argument cannot say "any persona but these five"; it
//!   rewrites an i386 `socket` rule into a refusal of every `socketcall`; and building a
//!   filter for three arches costs 0.7-1.2 ms at every launch, against ~10 us here.
//!
//! The numbers come from a maintained table (`table.rs`, generated from libseccomp's own
//! `syscalls.csv` by `tools/gen-syscall-table.py`), checked against libc's constants for
//! the native ABI by a test.
//!
//! Shape: `ld arch`, one block per entry point; each block loads the call number and
//! walks a binary tree of `jge` nodes down to leaves of at most [`LEAF`] `jeq` tests. A
//! tree is cheap to attach as well as to run: the kernel evaluates the filter once per
//! call number at attach time to build its constant-allow cache, and a linear list of
//! ~300 instructions made that 3x slower. Everything not named is allowed; a refused
//! call fails with its rule's errno, never a kill. Arguments are compared on their low
//! 32 bits (see [`ArgMatch`]).

use libc::sock_filter;

use crate::plan::{ArgMatch, Seccomp, SyscallRule};

mod table;
#[cfg(test)]
mod tests;

const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_JMP: u16 = 0x05;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;
/// The kernel's limit on a classic BPF program.
const BPF_MAXINSNS: usize = 4096;

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

/// At most this many `jeq` tests in a leaf of the tree.
const LEAF: usize = 8;

/// A rule names a system call the table does not know at all (a typo, or a table older
/// than the call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("seccomp: unknown system call {0:?} (not in {src})", src = table::SOURCE)]
    UnknownSyscall(String),
    #[error("seccomp: the filter has {0} instructions, more than the kernel's {BPF_MAXINSNS}")]
    TooLong(usize),
}

/// A system call ABI: a column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    X86_64,
    I386,
    X32,
    Aarch64,
    Arm,
}

/// The number of `name` on `abi`: `Ok(None)` when that ABI has no such call.
pub fn number(name: &str, abi: Abi) -> Result<Option<u32>, FilterError> {
    let i = table::SYSCALLS
        .binary_search_by(|row| row.0.as_bytes().cmp(name.as_bytes()))
        .map_err(|_| FilterError::UnknownSyscall(name.to_string()))?;
    let (_, x86_64, i386, x32, aarch64, arm) = table::SYSCALLS[i];
    let n = match abi {
        Abi::X86_64 => x86_64,
        Abi::I386 => i386,
        Abi::X32 => x32,
        Abi::Aarch64 => aarch64,
        Abi::Arm => arm,
    };
    Ok(u32::try_from(n).ok())
}

/// The entry points of this target: (audit arch, the ABIs whose numbers reach it,
/// whether it is a 32-bit compat one). x32 shares the x86-64 audit arch: its calls carry
/// `__X32_SYSCALL_BIT`.
fn entry_points() -> &'static [(u32, &'static [Abi], bool)] {
    if cfg!(target_arch = "x86_64") {
        &[
            (AUDIT_ARCH_X86_64, &[Abi::X86_64, Abi::X32], false),
            (AUDIT_ARCH_I386, &[Abi::I386], true),
        ]
    } else if cfg!(target_arch = "aarch64") {
        &[
            (AUDIT_ARCH_AARCH64, &[Abi::Aarch64], false),
            (AUDIT_ARCH_ARM, &[Abi::Arm], true),
        ]
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

fn ret_allow() -> sock_filter {
    stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
}

fn load_arg(index: u8) -> sock_filter {
    stmt(BPF_LD | BPF_W | BPF_ABS, off_arg_lo(index))
}

/// The code for one call number: its rules in plan order, the first that matches
/// refuses; none matches: allowed. Always ends in a `ret`.
fn action(rules: &[&SyscallRule]) -> Vec<sock_filter> {
    let mut b = Vec::new();
    for r in rules {
        match &r.arg {
            None => {
                b.push(ret_errno(r.errno));
                return b;
            }
            Some(ArgMatch::MaskedEq { index, mask, value }) => {
                b.push(load_arg(*index));
                if *mask != u32::MAX {
                    b.push(stmt(BPF_ALU | BPF_AND | BPF_K, *mask));
                }
                b.push(jump(BPF_JEQ, *value & *mask, 0, 1));
                b.push(ret_errno(r.errno));
            }
            Some(ArgMatch::AnyBit { index, mask }) => {
                b.push(load_arg(*index));
                b.push(jump(BPF_JSET, *mask, 0, 1));
                b.push(ret_errno(r.errno));
            }
            Some(ArgMatch::NotIn { index, values }) => {
                // An allowed value jumps past the refusal to the next rule.
                b.push(load_arg(*index));
                let n = values.len();
                for (k, v) in values.iter().enumerate() {
                    b.push(jump(
                        BPF_JEQ,
                        *v,
                        u8::try_from(n - k).expect("a short allow list"),
                        0,
                    ));
                }
                b.push(ret_errno(r.errno));
            }
        }
    }
    b.push(ret_allow());
    b
}

/// A tree over `entries` (sorted by number), with the call number in the accumulator.
fn tree(entries: &[(u32, Vec<sock_filter>)]) -> Vec<sock_filter> {
    if entries.len() <= LEAF {
        // jeq n_i -> its block; ret ALLOW; the blocks, each distinct one once.
        let mut blocks: Vec<&Vec<sock_filter>> = Vec::new();
        let mut which = Vec::new();
        for (_, b) in entries {
            let i = blocks.iter().position(|x| *x == b).unwrap_or_else(|| {
                blocks.push(b);
                blocks.len() - 1
            });
            which.push(i);
        }
        let mut out = Vec::new();
        let tests = entries.len();
        for (i, (nr, _)) in entries.iter().enumerate() {
            // Past the tests after this one, ret ALLOW, and the blocks before its own.
            let before: usize = blocks[..which[i]].iter().map(|b| b.len()).sum();
            let jt =
                u8::try_from(tests - i - 1 + 1 + before).expect("a leaf's jump fits in 8 bits");
            out.push(jump(BPF_JEQ, *nr, jt, 0));
        }
        out.push(ret_allow());
        for b in blocks {
            out.extend_from_slice(b);
        }
        return out;
    }
    let mid = entries.len() / 2;
    let (left, right) = entries.split_at(mid);
    let (l, r) = (tree(left), tree(right));
    let mut out = Vec::with_capacity(l.len() + r.len() + 2);
    match u8::try_from(l.len()) {
        Ok(skip) => out.push(jump(BPF_JGE, right[0].0, skip, 0)),
        Err(_) => {
            out.push(jump(BPF_JGE, right[0].0, 0, 1));
            out.push(stmt(BPF_JMP | BPF_JA, l.len() as u32));
        }
    }
    out.extend(l);
    out.extend(r);
    out
}

/// The refused numbers of one entry point, sorted, each with its code.
fn entries(
    sc: &Seccomp,
    abis: &[Abi],
    x32_too: bool,
) -> Result<Vec<(u32, Vec<sock_filter>)>, FilterError> {
    let mut by_nr: std::collections::BTreeMap<u32, Vec<&SyscallRule>> = Default::default();
    for rule in &sc.rules {
        for name in &rule.names {
            // Known to the table, but maybe not on these ABIs (iopl on arm64): skipped.
            let mut nrs = Vec::new();
            for &abi in abis {
                match (abi, number(name, abi)?) {
                    (Abi::X32, x32) if x32_too => {
                        // Its x32 number, and the x86-64 one with the x32 bit (the same
                        // call, or none on today's kernels).
                        let native = number(name, Abi::X86_64)?;
                        nrs.extend(x32.into_iter().chain(native).map(|n| X32_SYSCALL_BIT | n));
                    }
                    (Abi::X32, _) => {}
                    (_, Some(n)) => nrs.push(n),
                    (_, None) => {}
                }
            }
            for n in nrs {
                let list = by_nr.entry(n).or_default();
                if !list.iter().any(|r| std::ptr::eq(*r, rule)) {
                    list.push(rule);
                }
            }
        }
    }
    Ok(by_nr
        .into_iter()
        .map(|(nr, rules)| (nr, action(&rules)))
        .collect())
}

/// The filter for a plan's rules (see the module doc).
pub fn build_filter(sc: &Seccomp) -> Result<Vec<sock_filter>, FilterError> {
    let points = entry_points();
    if points.is_empty() || (sc.rules.is_empty() && !sc.deny_compat_abis) {
        return Ok(vec![ret_allow()]);
    }
    let mut blocks: Vec<Vec<sock_filter>> = Vec::new();
    for &(_, abis, compat) in points {
        if sc.deny_compat_abis && compat {
            blocks.push(vec![ret_errno(libc::EPERM)]);
            continue;
        }
        let mut b = vec![stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR)];
        let x32 = abis.contains(&Abi::X32);
        if x32 && sc.deny_compat_abis {
            // nr >= X32_SYSCALL_BIT: an x32 call, refused as a compat ABI.
            b.push(jump(BPF_JGE, X32_SYSCALL_BIT, 0, 1));
            b.push(ret_errno(libc::EPERM));
        }
        b.extend(tree(&entries(sc, abis, x32 && !sc.deny_compat_abis)?));
        blocks.push(b);
    }
    // ld arch; (jeq arch_i ? next : skip; ja block_i)*; ret ALLOW; block_0; block_1; ...
    let mut prog = vec![stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH)];
    let n = points.len();
    for (i, &(arch, _, _)) in points.iter().enumerate() {
        prog.push(jump(BPF_JEQ, arch, 0, 1));
        // After this `ja`: the remaining dispatch pairs, ret ALLOW, the blocks before i.
        let skip = 2 * (n - i - 1) + 1 + blocks[..i].iter().map(Vec::len).sum::<usize>();
        prog.push(stmt(BPF_JMP | BPF_JA, skip as u32));
    }
    prog.push(ret_allow());
    for b in blocks {
        prog.extend(b);
    }
    if prog.len() > BPF_MAXINSNS {
        return Err(FilterError::TooLong(prog.len()));
    }
    Ok(prog)
}
