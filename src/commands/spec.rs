//! `csbox spec`: build the plan exactly as `csbox run` does (`run::Resolved`) and export
//! it as an OCI runtime spec, printed or written as a bundle.

use crate::cli::SpecArgs;
use crate::commands::run::{prepare_claude_root, Resolved};
use crate::error::{Error, Result};
use crate::oci::{self, Target};
use crate::session::{SessionId, Store};

/// The session an exported spec names when none is asked for: a preview, not runnable.
const PREVIEW_ID: &str = "PREVIEW";

pub fn spec(args: SpecArgs) -> Result<i32> {
    let r = Resolved::resolve(&args.profile, |_| Ok(()), &args.command)?;
    let store = Store::new(r.paths.sessions_dir.clone());
    let mut notes = Vec::new();
    let (id, dir) = if args.new {
        prepare_claude_root(&r.paths, &store)?;
        let s = r.new_session(
            &store,
            SessionId::new(),
            None,
            |_| {},
            // No csbox process runs this session: its record must outlive a crash as it is.
            crate::fsutil::Durability::Full,
        )?;
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
        ));
    } else {
        notes.push(format!(
            "no session: the overlay names a session {PREVIEW_ID} that does not exist; use --new or --session ID for a runnable spec"
        ));
        (PREVIEW_ID.to_string(), store.dir.join(PREVIEW_ID))
    };
    let plan = r.plan(&id, &dir, r.profile.claude.state)?;
    let target = Target {
        home: r.paths.home.clone(),
        rootless: args.rootless.then_some((r.uid, r.gid)),
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
