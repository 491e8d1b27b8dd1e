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
        if store.info(&id, false)?.is_active() {
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
            Error::io("open", dir.clone(), e).hint("a session directory must be a directory, not a link")
        })?;
        let seed = || crate::session::setup::claude_json_seed(&r.paths, &r.cwd);
        let s = crate::session::layers::SessionDir { fd: &fd, path: &dir, id: &id };
        crate::session::layers::prepare(s, &plan.session_sources(), seed)?;
        crate::session::masks::prepare(&fd, &dir, &plan)?;
        // Recorded, so that neither diff nor gc's "empty" counts csbox's masks; a session
        // csbox runs right now records its own.
        if !plan.view.home_masks.is_empty() {
            if let Some(mut live) = SessionId::parse(&id).and_then(|sid| store.enter(&sid).ok()) {
                crate::session::masks::record(&mut live.meta, &plan);
                live.write_meta(crate::fsutil::Durability::Full)?;
            }
        }
    }
    let target = Target {
        rootless: args.rootless.then_some((r.uid, r.gid)),
        after_exit: (id != PREVIEW_ID)
            .then(|| std::env::current_exe().ok())
            .flatten(),
    };
    let export = oci::export(&plan, &target)?;
    for n in notes.iter().chain(&export.notes) {
        eprintln!("csbox spec: not expressed: {n}");
    }
    match &args.bundle {
        Some(dir) => {
            oci::write_bundle(dir, &export)?;
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
