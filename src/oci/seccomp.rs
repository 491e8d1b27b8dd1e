//! The plan's seccomp rules for libseccomp (the runtime compiles them): default allow,
//! each rule refused with its own errno.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::build::oci;
use crate::error::Result;
use crate::plan::{ArgMatch, Seccomp, SyscallRule};

/// A refusing OCI rule for `names`, with at most one argument test (libseccomp's
/// SCMP_CMP_MASKED_EQ takes (mask, datum): runc passes `value` as the mask and
/// `valueTwo` as the datum; a 32-bit mask compares the low 32 bits only, as the kernel
/// reads the argument, CVE-2019-10063).
fn oci_rule(names: &[String], errno: i32, arg: Option<(u8, u32, u32)>) -> Result<LinuxSyscall> {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.to_vec())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno as u32);
    if let Some((index, mask, value)) = arg {
        let arg = oci(LinuxSeccompArgBuilder::default()
            .index(index as usize)
            .value(mask as u64)
            .value_two(value as u64)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build())?;
        b = b.args(vec![arg]);
    }
    oci(b.build())
}

/// One plan rule as OCI rules: libseccomp compares one value per argument, so "any of
/// these bits" becomes one rule per bit, and an allow list the refusal of its complement.
fn translate_rule(
    r: &SyscallRule,
    out: &mut Vec<LinuxSyscall>,
    notes: &mut Vec<String>,
) -> Result<()> {
    match &r.arg {
        None => out.push(oci_rule(&r.names, r.errno, None)?),
        Some(ArgMatch::MaskedEq { index, mask, value }) => {
            out.push(oci_rule(&r.names, r.errno, Some((*index, *mask, *value)))?)
        }
        Some(ArgMatch::AnyBit { index, mask }) => {
            for bit in (0..32).map(|b| 1u32 << b).filter(|b| mask & b != 0) {
                out.push(oci_rule(&r.names, r.errno, Some((*index, bit, bit)))?);
            }
        }
        Some(ArgMatch::NotIn { index, values }) => {
            let small: Vec<u32> = values.iter().copied().filter(|v| *v != u32::MAX).collect();
            if small.iter().all(|v| *v < 64) && !values.contains(&u32::MAX) {
                // A small domain (socket families end at AF_MAX, 46): refuse each other value.
                for v in (0..64u32).filter(|v| !values.contains(v)) {
                    out.push(oci_rule(&r.names, r.errno, Some((*index, u32::MAX, v)))?);
                }
            } else {
                // Refuse every bit no allowed value has.
                let allowed = small.iter().fold(0u32, |a, v| a | v);
                for bit in (0..32).map(|b| 1u32 << b).filter(|b| allowed & b == 0) {
                    out.push(oci_rule(&r.names, r.errno, Some((*index, bit, bit)))?);
                }
                if values.contains(&u32::MAX) {
                    notes.push(format!(
                        "seccomp: {} with argument {index} = 0xffffffff (a query) is allowed natively; a runtime refuses it \
(libseccomp cannot allow one value among refused bits)",
                        r.names.join(", ")
                    ));
                }
            }
        }
    }
    Ok(())
}

pub fn translate(sc: &Seccomp, notes: &mut Vec<String>) -> Result<LinuxSeccomp> {
    let mut rules: Vec<LinuxSyscall> = Vec::new();
    for r in &sc.rules {
        translate_rule(r, &mut rules, notes)?;
    }
    // libseccomp 2.5 (Debian 12) knows calls up to Linux 5.17; runc skips a name its
    // libseccomp does not know, silently.
    let newer: Vec<&str> = sc
        .rules
        .iter()
        .flat_map(|r| r.names.iter())
        .filter(|n| {
            crate::sandbox::seccomp::number(n, crate::sandbox::seccomp::Abi::X86_64)
                .ok()
                .flatten()
                .is_some_and(|nr| nr > 450)
        })
        .map(String::as_str)
        .collect();
    if !newer.is_empty() {
        notes.push(format!(
            "seccomp: {} are newer than libseccomp 2.5's table: a runtime linked against it skips them silently",
            newer.join(", ")
        ));
    }
    let (native, compat): (Arch, &[Arch]) = if cfg!(target_arch = "aarch64") {
        (Arch::ScmpArchAarch64, &[Arch::ScmpArchArm])
    } else {
        (
            Arch::ScmpArchX86_64,
            &[Arch::ScmpArchX86, Arch::ScmpArchX32],
        )
    };
    let mut arches = vec![native];
    if sc.deny_compat_abis {
        notes.push(
            "32-bit entry points: natively refused with EPERM; here they are left out of `architectures`, so libseccomp kills a process that uses one"
                .into(),
        );
    } else {
        arches.extend_from_slice(compat);
    }
    oci(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(arches)
        .syscalls(rules)
        .build())
}
