//! `csbox spec`: build the plan exactly as `csbox run` does (`resolve`, with the same
//! sandbox flags) and export it as an OCI runtime spec, printed or written as a bundle.

use std::path::PathBuf;

use clap::Args;

use super::sandbox::SandboxArgs;
use crate::error::Error;
use crate::exit::Result;
use crate::oci::{self, Target};
use crate::resolve::Resolved;
use crate::session::setup::{new_session, prepare_claude_root};
use crate::session::{Metadata, SessionId, Store};

/// The session an exported spec names when none is asked for: a preview, not runnable.
const PREVIEW_ID: &str = "PREVIEW";

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox spec > config.json              preview (no session)\n  csbox spec --profile ci --new --bundle ./bundle -- claude -p 'run the tests'\n  sudo runc run -b ./bundle job1\n  csbox spec --session 0193a1b2 --rootless --bundle ./b\n  csbox spec --ro-bind ~/datasets --hide ~/notes --new --bundle ./b"
)]
pub struct SpecArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Use an existing session's layer (id, id prefix or name)
    #[arg(long, add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub session: Option<String>,
    /// Create a new session for the bundle
    #[arg(long, conflicts_with = "session")]
    pub new: bool,
    /// Write a complete bundle (config.json + rootfs/) to DIR
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// A spec for an unprivileged runtime user (a user namespace maps your uid and gid)
    #[arg(long)]
    pub rootless: bool,
    /// The command and its arguments (default: claude)
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn spec(args: SpecArgs) -> Result<i32> {
    let r = Resolved::resolve(&args.sandbox.request(&args.command, None)?)?;
    let store = Store::new(r.paths.sessions_dir.clone());
    let mut notes = Vec::new();
    let mut active = false;
    let (id, dir) = if args.new {
        prepare_claude_root(&r.paths, &store)?;
        let meta = Metadata::new(
            SessionId::new(),
            None,
            &r.profile.name,
            r.argv.clone(),
            r.cwd.clone(),
        );
        // No csbox process runs this session: its record must outlive a crash as it is.
        let s = new_session(&r.paths, &store, meta, crate::fsutil::Durability::Full)?;
        eprintln!("csbox spec: created session {} for this spec", s.id);
        (s.id.to_string(), s.dir.clone())
    } else if let Some(reference) = &args.session {
        let id = store.resolve(reference)?;
        active = store.info(&id, false)?.is_active();
        if active {
            notes.push(format!(
                "session {id} is running under csbox right now: do not start the runtime on its layer until it ends \
(two mounts of one overlay upper dir corrupt it)"
            ));
        }
        prepare_claude_root(&r.paths, &store)?;
        (id.to_string(), store.dir.join(id.as_str()))
    } else if args.bundle.is_some() {
        return Err(Error::Usage(
            "--bundle writes a spec a runtime will run, and that needs a session layer: add --new, or --session ID".into(),
        )
        .into());
    } else {
        notes.push(format!(
            "no session: the overlay names a session {PREVIEW_ID} that does not exist; use --new or --session ID for a runnable spec"
        ));
        (PREVIEW_ID.to_string(), store.dir.join(PREVIEW_ID))
    };
    let plan = r.plan(&id, &dir, r.profile.claude.state)?;
    if id != PREVIEW_ID {
        // The runtime will mount these paths as they are then: check the session's own
        // layer now, as `csbox run` does before each launch (a link planted by the session
        // fails here, a planted .claude.json is replaced), not following any link.
        let fd = crate::fsutil::open_dir_nofollow(&dir).map_err(|e| {
            Error::io("open", dir.clone(), e)
                .hint("a session directory must be a directory, not a link")
        })?;
        let seed = || crate::session::setup::claude_json_seed(&r.paths, &r.cwd);
        let s = crate::session::layers::SessionDir {
            fd: &fd,
            path: &dir,
            id: &id,
        };
        crate::session::layers::prepare(s, &plan.session_sources(), seed)?;
        // A running session's mask layers are its mounts' lower layers: left as they are.
        if !active {
            crate::session::masks::prepare(&fd, &dir, &plan)?;
        }
    }
    let private_masks = private_masks_dir(&plan, args.bundle.as_deref(), &r.cwd)?;
    let target = Target {
        private_masks: private_masks.clone(),
        rootless: args.rootless.then_some((r.uid, r.gid)),
        hooks: (id != PREVIEW_ID)
            .then(|| std::env::current_exe().ok())
            .flatten()
            .map(|exe| oci::BundleHooks {
                exe,
                written: crate::session::quarantine::ctime_floor(),
            }),
    };
    let export = oci::export(&plan, &target)?;
    for n in notes.iter().chain(&export.notes) {
        eprintln!("csbox spec: not expressed: {n}");
    }
    match &args.bundle {
        Some(dir) => {
            oci::write_bundle(dir, &export)?;
            if let Some(p) = &private_masks {
                write_private_masks(&plan, p)?;
            }
            eprintln!(
                "csbox spec: wrote {}/config.json and rootfs/; run it with: {}runc run -b {} csbox-{}",
                dir.display(),
                if args.rootless { "" } else { "sudo " },
                dir.display(),
                &id[..id.len().min(8)]
            );
        }
        None => print!("{}", oci::to_json(&export.spec)?),
    }
    Ok(0)
}

/// Where a bundle keeps its copy of the home's mask layer, when the plan has one: its
/// `home-masks/`. A bundle inside the home cannot hold it: overlayfs refuses a lower
/// layer inside another ("overlapping lowerdir path", ELOOP).
fn private_masks_dir(
    plan: &crate::plan::Plan,
    bundle: Option<&std::path::Path>,
    cwd: &std::path::Path,
) -> Result<Option<PathBuf>> {
    let has = plan.mounts.iter().any(|m| {
        matches!(m, crate::plan::MountOp::Overlay { masks: Some(l), .. } if matches!(l.place, crate::plan::MaskPlace::Private { .. }))
    });
    let Some(b) = bundle.filter(|_| has) else {
        return Ok(None);
    };
    let b = crate::paths::canonical_or_self(&cwd.join(b));
    if b.starts_with(&plan.view.home) {
        return Err(Error::Usage(format!(
            "bundle dir {} lies inside your home {}: the bundle holds the home's mask layer (whiteouts over hidden paths), \
and overlayfs refuses a lower layer inside another (\"overlapping lowerdir path\"); write the bundle outside the home, e.g. /var/tmp/csbox-bundle",
            b.display(),
            plan.view.home.display()
        ))
        .into());
    }
    Ok(Some(b.join("home-masks")))
}

/// The bundle's copy of the home's mask layer, made afresh.
fn write_private_masks(plan: &crate::plan::Plan, dir: &std::path::Path) -> Result<()> {
    let parent = dir.parent().expect("a bundle's subdir");
    let pfd = crate::fsutil::open_dir_nofollow(parent).map_err(|e| Error::io("open", parent, e))?;
    match crate::fsutil::remove_tree_at(&pfd, "home-masks") {
        Err(e) if e.errno != nix::errno::Errno::ENOENT => {
            return Err(Error::io("remove", dir, e.into()).into())
        }
        _ => {}
    }
    nix::sys::stat::mkdirat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&pfd)),
        "home-masks",
        nix::sys::stat::Mode::from_bits_truncate(0o700),
    )
    .map_err(|e| Error::io("mkdir", dir, e.into()))?;
    let fd = crate::fsutil::open_dir_nofollow(dir).map_err(|e| Error::io("open", dir, e))?;
    for m in &plan.mounts {
        if let crate::plan::MountOp::Overlay { masks: Some(l), .. } = m {
            if matches!(l.place, crate::plan::MaskPlace::Private { .. }) {
                crate::session::masks::write_layer(&fd, &l.entries)
                    .map_err(|e| Error::io("write the mask layer", dir, e))?;
            }
        }
    }
    Ok(())
}
