//! The "what to do" part of messages that more than one layer gives (`csbox run` when a
//! launch fails, `csbox doctor` when a check fails), in one place.

use nix::errno::Errno;

pub const FIX_MAX_USERNS: &str = "sysctl -w user.max_user_namespaces=15000";
pub const FIX_UNPRIVILEGED_USERNS_CLONE: &str = "sysctl -w kernel.unprivileged_userns_clone=1";
pub const FIX_APPARMOR: &str = "sudo install -m 644 profiles/apparmor/csbox /etc/apparmor.d/csbox && sudo apparmor_parser -r /etc/apparmor.d/csbox";
pub const FIX_COMPAT: &str = "or run with --profile compat (no namespaces)";

/// What to tell the user when clone() itself fails: it is the user namespace that is refused.
pub fn clone(e: Errno) -> String {
    match e {
        Errno::ENOSPC => format!(
            "user namespaces are disabled or exhausted: user.max_user_namespaces is 0 or reached \
({FIX_MAX_USERNS}); {FIX_COMPAT}; see `csbox doctor`"
        ),
        Errno::EPERM | Errno::EACCES => format!(
            "unprivileged user namespaces are refused: kernel.unprivileged_userns_clone=0 \
({FIX_UNPRIVILEGED_USERNS_CLONE}), or AppArmor restricts them (Ubuntu ≥ 23.10: install \
profiles/apparmor/csbox), or a seccomp policy of a container; {FIX_COMPAT}; see `csbox doctor`"
        ),
        Errno::EINVAL => "this kernel lacks a namespace csbox needs; see `csbox doctor`".into(),
        _ => "see `csbox doctor`".into(),
    }
}

/// What to tell the user when a mount step fails.
pub const PROC_MASKED: &str = "a fresh /proc cannot be mounted here: csbox is probably inside a container that masks /proc; see `csbox doctor`";
pub const OVERLAY_REFUSED: &str =
    "this kernel refuses overlayfs in a user namespace (Linux ≥ 5.11 needed); see `csbox doctor`";
pub const SEE_DOCTOR: &str = "see `csbox doctor`";
