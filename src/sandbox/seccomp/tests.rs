use super::*;
use crate::plan::{DEFAULT_ENOSYS, DEFAULT_EPERM, STRICT_ENOSYS, STRICT_EPERM};
use crate::profile::{SeccompLevel, BUILTINS};

/// A classic-BPF interpreter for the subset we emit, to test the filter as data.
fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    for _ in 0..prog.len() + 1 {
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
            c if c == BPF_JMP | BPF_JA => pc += 1 + i.k as usize,
            c if c == BPF_JMP | BPF_JEQ | BPF_K => pc += cond(acc == i.k),
            c if c == BPF_JMP | BPF_JGE | BPF_K => pc += cond(acc >= i.k),
            c if c == BPF_JMP | BPF_JSET | BPF_K => pc += cond(acc & i.k != 0),
            c if c == BPF_RET | BPF_K => return i.k,
            c => panic!("unexpected op {c:#x}"),
        }
    }
    panic!("the program loops");
}

/// What the rules say, read directly (first matching rule in plan order wins).
fn reference(sc: &Seccomp, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let Some(&(_, abis, compat)) = entry_points().iter().find(|e| e.0 == arch) else {
        return SECCOMP_RET_ALLOW;
    };
    let x32_call = abis.contains(&Abi::X32) && nr & X32_SYSCALL_BIT != 0;
    if sc.deny_compat_abis && (compat || x32_call) {
        return SECCOMP_RET_ERRNO | libc::EPERM as u32;
    }
    for rule in &sc.rules {
        let named = rule.names.iter().any(|name| {
            if x32_call {
                [Abi::X32, Abi::X86_64]
                    .iter()
                    .any(|a| number(name, *a).unwrap() == Some(nr & !X32_SYSCALL_BIT))
            } else {
                abis.iter()
                    .filter(|a| **a != Abi::X32)
                    .any(|a| number(name, *a).unwrap() == Some(nr))
            }
        });
        if !named {
            continue;
        }
        let refused = match &rule.arg {
            None => true,
            Some(m) => {
                let a = args[m.index() as usize] as u32;
                match m {
                    ArgMatch::MaskedEq { mask, value, .. } => a & mask == *value,
                    ArgMatch::AnyBit { mask, .. } => a & mask != 0,
                    ArgMatch::NotIn { values, .. } => !values.contains(&a),
                }
            }
        };
        if refused {
            return SECCOMP_RET_ERRNO | (rule.errno as u32 & 0xffff);
        }
    }
    SECCOMP_RET_ALLOW
}

fn profile_rules(name: &str) -> Seccomp {
    let prof = crate::profile::load(name, std::path::Path::new("/nonexistent")).unwrap();
    crate::plan::seccomp_rules(
        &prof,
        prof.isolation == crate::profile::Isolation::Namespaces,
    )
}

/// Argument sets that exercise every rule's edges: zero, the refused values, the allowed
/// ones, and the same with high bits set.
fn arg_sets() -> Vec<[u64; 6]> {
    let mut vals: Vec<u64> = vec![
        0, 1, 8, 38, 40, 41, 0x5412, 0x5413, 0x541C, 0x2_0000, 0x2_0008, 0x40_0000,
    ];
    vals.extend([
        0xffff_ffff,
        libc::CLONE_NEWUSER as u64,
        libc::CLONE_NEWNS as u64,
        0x11,
        0x1_0000_0028,
    ]);
    let high: Vec<u64> = vals.iter().map(|v| v | (1 << 32)).collect();
    vals.extend(high);
    let mut out = Vec::new();
    for v in &vals {
        out.push([*v, 0, 0, 0, 0, 0]);
        out.push([3, *v, 0, 0, 0, 0]);
    }
    out
}

#[test]
#[cfg(target_arch = "x86_64")]
fn every_number_on_every_entry_point_gets_what_the_rules_say() {
    for name in ["default", "strict"] {
        let sc = profile_rules(name);
        let prog = build_filter(&sc).unwrap();
        let mut numbers: Vec<u32> = (0..600).collect();
        numbers.extend((0..600).map(|n| n | X32_SYSCALL_BIT));
        for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64] {
            for &nr in &numbers {
                for args in arg_sets() {
                    assert_eq!(
                        run(&prog, arch, nr, args),
                        reference(&sc, arch, nr, args),
                        "{name}: arch {arch:#x} nr {nr:#x} args {args:x?}"
                    );
                }
            }
        }
    }
}

const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
const ALLOW: u32 = SECCOMP_RET_ALLOW;

fn nr(name: &str, abi: Abi) -> u32 {
    number(name, abi).unwrap().unwrap()
}

#[test]
#[cfg(target_arch = "x86_64")]
fn the_argument_rules_compare_32_bits_and_mean_what_docker_means() {
    let p = build_filter(&profile_rules("default")).unwrap();
    let x64 = AUDIT_ARCH_X86_64;
    let ioctl = nr("ioctl", Abi::X86_64);
    assert_eq!(run(&p, x64, ioctl, [0, 0x5412, 0, 0, 0, 0]), EPERM);
    assert_eq!(
        run(&p, x64, ioctl, [0, 0x1_0000_5412, 0, 0, 0, 0]),
        EPERM,
        "high bits ignored"
    );
    assert_eq!(
        run(&p, x64, ioctl, [0, 0x5413, 0, 0, 0, 0]),
        ALLOW,
        "TIOCGWINSZ"
    );
    assert_eq!(
        run(&p, x64, X32_SYSCALL_BIT | 514, [0, 0x541C, 0, 0, 0, 0]),
        EPERM,
        "x32 ioctl"
    );
    assert_eq!(
        run(&p, AUDIT_ARCH_I386, 54, [0, 0x5412, 0, 0, 0, 0]),
        EPERM,
        "i386 ioctl"
    );
    let socket = nr("socket", Abi::X86_64);
    let eafnosupport = SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
    assert_eq!(
        run(&p, x64, socket, [40, 1, 0, 0, 0, 0]),
        eafnosupport,
        "AF_VSOCK"
    );
    assert_eq!(
        run(&p, x64, socket, [0x1_0000_0028, 1, 0, 0, 0, 0]),
        eafnosupport,
        "AF_VSOCK with high bits"
    );
    assert_eq!(
        run(&p, x64, socket, [38, 5, 0, 0, 0, 0]),
        eafnosupport,
        "AF_ALG"
    );
    assert_eq!(run(&p, x64, socket, [2, 1, 0, 0, 0, 0]), ALLOW, "AF_INET");
    let personality = nr("personality", Abi::X86_64);
    for ok in [0u64, 8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
        assert_eq!(
            run(&p, x64, personality, [ok, 0, 0, 0, 0, 0]),
            ALLOW,
            "persona {ok:#x}"
        );
    }
    for bad in [0x40_0000u64, 0x4_0000, 0x1, 0x0040_0008] {
        assert_eq!(
            run(&p, x64, personality, [bad, 0, 0, 0, 0, 0]),
            EPERM,
            "persona {bad:#x}"
        );
    }
    let clone = nr("clone", Abi::X86_64);
    assert_eq!(
        run(&p, x64, clone, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
        ALLOW,
        "nested namespaces stay for bwrap"
    );
    let s = build_filter(&profile_rules("strict")).unwrap();
    assert_eq!(
        run(
            &s,
            x64,
            clone,
            [libc::CLONE_NEWNET as u64 | 0x11, 0, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(
        run(&s, x64, clone, [0x3d0f00, 0, 0, 0, 0, 0]),
        ALLOW,
        "a thread"
    );
    assert_eq!(run(&s, x64, socket, [40, 1, 0, 0, 0, 0]), eafnosupport);
    assert_eq!(
        run(&s, x64, socket, [17, 3, 0, 0, 0, 0]),
        eafnosupport,
        "AF_PACKET"
    );
    assert_eq!(run(&s, x64, socket, [10, 1, 0, 0, 0, 0]), ALLOW, "AF_INET6");
    assert_eq!(
        run(&s, AUDIT_ARCH_I386, nr("getpid", Abi::I386), [0; 6]),
        EPERM,
        "i386 refused whole"
    );
    assert_eq!(
        run(&s, x64, X32_SYSCALL_BIT | 39, [0; 6]),
        EPERM,
        "x32 refused whole"
    );
    assert_eq!(run(&s, x64, nr("getpid", Abi::X86_64), [0; 6]), ALLOW);
}

#[test]
fn every_listed_name_is_in_the_table_and_the_table_agrees_with_libc() {
    for name in DEFAULT_EPERM
        .iter()
        .chain(DEFAULT_ENOSYS)
        .chain(STRICT_EPERM)
        .chain(STRICT_ENOSYS)
    {
        number(name, Abi::X86_64).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        table::SYSCALLS
            .windows(2)
            .all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()),
        "sorted"
    );
    let native = if cfg!(target_arch = "aarch64") {
        Abi::Aarch64
    } else {
        Abi::X86_64
    };
    let checks: &[(&str, libc::c_long)] = &[
        ("ioctl", libc::SYS_ioctl),
        ("clone", libc::SYS_clone),
        ("clone3", libc::SYS_clone3),
        ("unshare", libc::SYS_unshare),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("bpf", libc::SYS_bpf),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("personality", libc::SYS_personality),
        ("socket", libc::SYS_socket),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("ptrace", libc::SYS_ptrace),
        ("process_madvise", libc::SYS_process_madvise),
        ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ];
    for (name, n) in checks {
        assert_eq!(number(name, native).unwrap(), Some(*n as u32), "{name}");
    }
    assert_eq!(
        number("no_such_call", native),
        Err(FilterError::UnknownSyscall("no_such_call".into()))
    );
}

#[test]
fn the_filters_are_small_trees_and_no_rules_allow_all() {
    let none = Seccomp {
        rules: vec![],
        deny_compat_abis: false,
    };
    assert_eq!(build_filter(&none).unwrap().len(), 1);
    for (name, _) in BUILTINS {
        let sc = profile_rules(name);
        let len = build_filter(&sc).unwrap().len();
        eprintln!("{name}: {len} instructions");
        assert!(len < 400, "{name}: {len} instructions");
    }
    let _ = SeccompLevel::Default;
}
