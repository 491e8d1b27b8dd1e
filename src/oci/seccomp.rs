//! The plan's seccomp rules for libseccomp (the runtime compiles them): default allow,
//! each rule refused with its own errno.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::build::oci;
use crate::error::Result;
use crate::plan::Seccomp;

pub fn translate(sc: &Seccomp, notes: &mut Vec<String>) -> Result<LinuxSeccomp> {
    let mut rules: Vec<LinuxSyscall> = Vec::new();
    for r in &sc.rules {
        let mut b = LinuxSyscallBuilder::default()
            .names(r.names.clone())
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(r.errno as u32);
        if let Some(a) = r.arg {
            // libseccomp's SCMP_CMP_MASKED_EQ takes (mask, datum): runc passes `value` as
            // the mask and `valueTwo` as the datum. A 32-bit mask compares the low 32
            // bits only, as the kernel reads the argument (CVE-2019-10063).
            let arg = oci(LinuxSeccompArgBuilder::default()
                .index(a.index as usize)
                .value(a.mask as u64)
                .value_two(a.value as u64)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build())?;
            b = b.args(vec![arg]);
        }
        rules.push(oci(b.build())?);
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
