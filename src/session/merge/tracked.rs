//! What a transcript makes Claude Code write on the host later, judged before it merges.
//!
//! Claude Code's rewind (`claude --resume ID --rewind-files MSG`, "restore code" in the
//! TUI) writes every file a message's file history tracks from its backup in
//! `file-history/<conversation>/`, and deletes one whose backup is `null`. Those entries
//! live in the transcript: `file-history-snapshot` lines (`snapshot.trackedFileBackups`,
//! path => entry) and, since 2.1.3xx, `file-history-delta` lines (`trackingPath` and
//! `backup`). A session writes its transcript, so a merged one could make your host's
//! Claude Code write `~/.bashrc` (red-team 6, A6-7), a `.git/config` or
//! `.claude/settings.json` csbox kept read-only inside, or a file past a link in the
//! project (red-team 7, A7-4). Its lines also name the directory they ran in (`cwd`):
//! Claude Code's project key is lossy (`~/p.x` and `~/p_x` are both `-home-u-p-x`), so a
//! session could add to another project's conversation filed under the same key (A7-8).
//!
//! Every line is parsed, and every object in it that has a `trackedFileBackups` or a
//! `trackingPath` key, at any depth, counts as tracking: one unrecognised spelling would
//! be a way through. A transcript is refused whole, with the reason, when a line is not
//! JSON, names another working directory, or tracks a path that is outside the project,
//! is or lies below a protected name (the profile's `protect` list, matched in every
//! directory as the exit walk does, and any `.git`), goes through a symbolic link in the
//! project now, or carries a `realParentDir` (Claude Code checks a restore's parent
//! against it) other than its lexical parent.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::BufRead;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::Mode;
use serde_json::Value;

use crate::fsutil::{dir_flags, openat_nofollow};
use crate::human::printable;

/// Transcripts are read this far (the merge's per-file bound).
pub const SCAN_CAP: u64 = 64 << 20;

/// The project a session ran in, as a merge judges the paths its transcripts track.
#[derive(Debug)]
pub struct Project {
    /// The session's working directory (getcwd's, so no link in it).
    pub cwd: PathBuf,
    /// That directory on the host, opened; None when it is gone.
    dir: Option<OwnedFd>,
    /// The protected paths, each as its components.
    protect: Vec<Vec<OsString>>,
    /// Verdicts on paths already judged: a long conversation tracks the same files in
    /// every snapshot.
    seen: HashMap<String, Result<(), String>>,
}

fn why(path: &str, what: &str) -> String {
    format!(
        "this conversation's file history tracks {}, {what}: restoring code at that message (claude --resume, rewind) would write it on your host",
        printable(path)
    )
}

impl Project {
    /// The project `cwd`, protecting the paths `protect` (relative, as a profile's
    /// `protect` lists them).
    pub fn new(cwd: &Path, protect: &[&str]) -> Project {
        let dir = std::fs::File::open(cwd)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_dir()))
            .map(OwnedFd::from);
        Project {
            cwd: cwd.to_path_buf(),
            dir,
            protect: protect
                .iter()
                .map(|p| Path::new(p).iter().map(|c| c.to_os_string()).collect())
                .filter(|c: &Vec<OsString>| !c.is_empty())
                .collect(),
            seen: HashMap::new(),
        }
    }

    /// The backup names the tracked entries of the transcript `r` name, or why the
    /// transcript is refused.
    pub fn scan(&mut self, r: impl std::io::Read) -> Result<HashSet<String>, String> {
        let mut names = HashSet::new();
        let mut r = std::io::BufReader::new(r.take(SCAN_CAP));
        let mut line = Vec::new();
        for no in 1u64.. {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("it cannot be read: {e}")),
            }
            // A last line without its newline is not merged (yet): judged when it is.
            if line.last() != Some(&b'\n') || line.trim_ascii().is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                return Err(format!(
                    "line {no} is not JSON csbox can read, so what it tracks cannot be checked"
                ));
            };
            self.line(&v, no, &mut names)?;
        }
        Ok(names)
    }

    fn line(&mut self, v: &Value, no: u64, names: &mut HashSet<String>) -> Result<(), String> {
        if let Some(c) = self.elsewhere(v.get("cwd")) {
            return Err(format!(
                "line {no} ran in {c}, not in this session's project {}: another project's conversation (Claude Code's project key is lossy: `~/p.x` and `~/p_x` share one)",
                printable(&self.cwd.to_string_lossy())
            ));
        }
        self.steering(v, no)?;
        let mut found = Vec::new();
        collect(v, &mut found)?;
        for (path, entries) in found {
            self.path(path)?;
            for e in entries {
                self.entry(path, e, names)?;
            }
        }
        Ok(())
    }

    /// A line that tells the host's Claude Code where to work on resume: a
    /// `worktree-state` whose `worktreePath` lies outside the project made `claude
    /// --resume` chdir there and run `git status` (red-team 10, A10-B1); a
    /// `bridge-session` would reconnect a Remote Control bridge.
    fn steering(&self, v: &Value, no: u64) -> Result<(), String> {
        if v.get("type").and_then(Value::as_str) == Some("bridge-session") {
            return Err(format!(
                "line {no} is a Remote Control bridge record: the host's claude --resume would reconnect it"
            ));
        }
        let places = [Some(v), v.get("worktreeSession")];
        for obj in places.into_iter().flatten() {
            for key in ["worktreePath", "originalCwd", "relocatedCwd"] {
                if let Some(p) = self.elsewhere(obj.get(key).filter(|p| !p.is_null())) {
                    return Err(format!(
                        "line {no} names {p} ({key}) as where the host's Claude Code works on resume, not in this session's project {}",
                        printable(&self.cwd.to_string_lossy())
                    ));
                }
            }
        }
        Ok(())
    }

    /// A line's field that should name the project or a path in it and does not, spelled
    /// for a message (a value that is no string too); None when absent or held.
    fn elsewhere(&self, v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(p) if self.holds(Path::new(p)) => None,
            p => Some(p.as_str().map(printable).unwrap_or_else(|| p.to_string())),
        }
    }

    /// `p` (absolute) is the project or lies in it, with no `..` on the way.
    fn holds(&self, p: &Path) -> bool {
        p.is_absolute()
            && p.starts_with(&self.cwd)
            && !p.components().any(|c| c == Component::ParentDir)
    }

    /// What Claude Code makes of a tracked path: a relative one is below its original
    /// working directory.
    fn absolute(&self, p: &str) -> PathBuf {
        self.cwd.join(p).components().collect()
    }

    fn path(&mut self, p: &str) -> Result<(), String> {
        if let Some(v) = self.seen.get(p) {
            return v.clone();
        }
        let v = self.judge(p);
        self.seen.insert(p.to_string(), v.clone());
        v
    }

    fn judge(&self, p: &str) -> Result<(), String> {
        let cwd = printable(&self.cwd.to_string_lossy());
        if p.contains('\0') {
            return Err(why(p, "a path with a NUL byte in it"));
        }
        let full = self.absolute(p);
        if Path::new(p).components().any(|c| c == Component::ParentDir) || !self.holds(&full) {
            return Err(why(p, &format!("outside the project {cwd}")));
        }
        let rel: Vec<&std::ffi::OsStr> =
            full.strip_prefix(&self.cwd).expect("held").iter().collect();
        if rel.is_empty() {
            return Err(why(p, "the project directory itself"));
        }
        if rel.iter().any(|c| *c == ".git") {
            return Err(why(
                p,
                "inside a git directory, which csbox keeps read-only",
            ));
        }
        for i in 0..rel.len() {
            let below = |pr: &&Vec<OsString>| {
                pr.len() <= rel.len() - i && pr.iter().zip(&rel[i..]).all(|(a, b)| a == b)
            };
            if let Some(hit) = self.protect.iter().find(below) {
                let name: PathBuf = hit.iter().collect();
                return Err(why(
                    p,
                    &format!(
                        "which csbox keeps read-only in the project ({} is protected)",
                        name.display()
                    ),
                ));
            }
        }
        self.no_link(p, &rel)
    }

    /// No existing component of `rel` below the project is a symbolic link: Claude Code
    /// refuses a destination that is one, but follows one on the way unless the entry
    /// carries a `realParentDir`.
    fn no_link(&self, p: &str, rel: &[&std::ffi::OsStr]) -> Result<(), String> {
        use nix::{fcntl::AtFlags, sys::stat::fstatat};
        use std::os::fd::AsRawFd;
        let Some(top) = &self.dir else {
            return Ok(()); // the project is gone: nothing in it to lead elsewhere
        };
        let mut cur: Option<OwnedFd> = None;
        for (i, c) in rel.iter().enumerate() {
            let at: PathBuf = self.cwd.join(rel[..=i].iter().collect::<PathBuf>());
            let at = printable(&at.to_string_lossy());
            let name = c.to_str().expect("a JSON string's component");
            let d = cur.as_ref().unwrap_or(top);
            let st = match fstatat(Some(d.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(nix::errno::Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(why(p, &format!("and {at} cannot be looked at ({e})"))),
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    return Err(why(
                        p,
                        &format!("which goes through the symbolic link {at} in the project"),
                    ))
                }
                libc::S_IFDIR if i + 1 < rel.len() => {
                    match openat_nofollow(d, name, dir_flags(), Mode::empty()) {
                        Ok(fd) => cur = Some(fd),
                        Err(e) => return Err(why(p, &format!("and {at} cannot be opened ({e})"))),
                    }
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// One entry (`{backupFileName, version, backupTime, realParentDir}`) for `path`.
    fn entry(&self, path: &str, e: &Value, names: &mut HashSet<String>) -> Result<(), String> {
        let Value::Object(e) = e else {
            return Err(why(path, "with an entry that is not an object"));
        };
        if let Some(real) = e.get("realParentDir") {
            let parent = self.absolute(path);
            let parent = parent.parent().unwrap_or(Path::new("/"));
            let same = real
                .as_str()
                .is_some_and(|r| Path::new(r).components().eq(parent.components()));
            if !same {
                let r = real
                    .as_str()
                    .map(printable)
                    .unwrap_or_else(|| real.to_string());
                return Err(why(
                    path,
                    &format!(
                        "with a realParentDir {r} that is not its parent {}",
                        printable(&parent.to_string_lossy())
                    ),
                ));
            }
        }
        match e.get("backupFileName") {
            Some(Value::String(n)) => {
                names.insert(n.clone());
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(why(path, "with a backupFileName that is not a string")),
        }
        Ok(())
    }
}

/// Every tracked path in `v`, at any depth, with the entries that go with it: the values
/// of a `trackedFileBackups` object, and for a `trackingPath` its object's `backup` and
/// that object itself (where a `realParentDir` or `backupFileName` could be put too).
fn collect<'v>(v: &'v Value, out: &mut Vec<(&'v str, Vec<&'v Value>)>) -> Result<(), String> {
    const NOT_WRITTEN: &str = "not what Claude Code writes, so what it tracks cannot be checked";
    match v {
        Value::Object(o) => {
            match o.get("trackedFileBackups") {
                None | Some(Value::Null) => {}
                Some(Value::Object(t)) => out.extend(t.iter().map(|(k, e)| (k.as_str(), vec![e]))),
                Some(_) => {
                    return Err(format!(
                        "a trackedFileBackups that is not an object: {NOT_WRITTEN}"
                    ))
                }
            }
            match o.get("trackingPath") {
                None => {}
                Some(Value::String(p)) => {
                    let backup = o.get("backup").filter(|b| !b.is_null());
                    out.push((p.as_str(), backup.into_iter().chain([v]).collect()));
                }
                Some(_) => {
                    return Err(format!(
                        "a trackingPath that is not a string: {NOT_WRITTEN}"
                    ))
                }
            }
            for x in o.values() {
                collect(x, out)?;
            }
        }
        Value::Array(a) => {
            for x in a {
                collect(x, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTECT: &[&str] = &[".git/config", ".claude/settings.json", ".vscode", ".envrc"];

    fn snap(path: &str, entry: &str) -> String {
        format!(
            r#"{{"type":"file-history-snapshot","messageId":"m","snapshot":{{"messageId":"m","trackedFileBackups":{{"{path}":{entry}}}}},"isSnapshotUpdate":false}}"#
        )
    }

    fn delta(path: &str, backup: &str) -> String {
        format!(
            r#"{{"type":"file-history-delta","messageId":"m","snapshotMessageId":"m","trackingPath":"{path}","backup":{backup}}}"#
        )
    }

    fn scan(p: &mut Project, lines: &[String]) -> Result<HashSet<String>, String> {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        p.scan(body.as_bytes())
    }

    #[test]
    fn ordinary_tracked_files_pass_and_name_their_backups() {
        let d = tempfile::tempdir().unwrap();
        let cwd = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(cwd.join("src")).unwrap();
        let c = cwd.display();
        let mut p = Project::new(&cwd, PROTECT);
        let bk = |n: &str| format!(r#"{{"backupFileName":"{n}","version":1}}"#);
        let real = format!(r#"{{"backupFileName":"cc@v1","version":1,"realParentDir":"{c}/src"}}"#);
        let user = format!(r#"{{"type":"user","cwd":"{c}","message":"edit ~/.bashrc"}}"#);
        let sub = format!(r#"{{"type":"user","cwd":"{c}/src"}}"#);
        let got = scan(
            &mut p,
            &[
                user,
                sub,
                snap("src/a.rs", &bk("aa@v1")),
                snap(&format!("{c}/src/b.rs"), &bk("bb@v2")),
                snap(&format!("{c}/src/new.rs"), &real),
                delta("src/gone.rs", r#"{"backupFileName":null,"version":1}"#),
                delta(".gitignore", &bk("dd@v1")),
            ],
        )
        .unwrap();
        let want: HashSet<String> = ["aa@v1", "bb@v2", "cc@v1", "dd@v1"]
            .map(String::from)
            .into();
        assert_eq!(got, want);
        assert!(
            p.scan("{\"cut\":".as_bytes()).is_ok(),
            "a line not yet complete is not judged"
        );
    }

    #[test]
    fn paths_a_host_rewind_must_not_write_refuse_the_transcript() {
        let d = tempfile::tempdir().unwrap();
        let cwd = d.path().join("proj");
        std::fs::create_dir_all(cwd.join("t/real")).unwrap();
        let cwd = cwd.canonicalize().unwrap();
        std::os::unix::fs::symlink(d.path(), cwd.join("t/homelink")).unwrap();
        std::os::unix::fs::symlink("real", cwd.join("t/dirlink")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", cwd.join("t/filelink")).unwrap();
        let c = cwd.display().to_string();
        let bk = r#"{"backupFileName":"0123456789abcdef@v1","version":1}"#;
        let cases: Vec<(String, &str)> = vec![
            (snap("/home/u/.bashrc", bk), "outside the project"),
            (snap("../x", bk), "outside the project"),
            (snap(&format!("{c}/../.bashrc"), bk), "outside the project"),
            (snap(&format!("{c}X/a"), bk), "outside the project"),
            (delta("/home/u/.bashrc", bk), "outside the project"),
            (snap(".git/config", bk), "inside a git directory"),
            (
                snap(&format!("{c}/.git/hooks/pre-commit"), bk),
                "inside a git directory",
            ),
            (snap("pkg/r/.git/config", bk), "inside a git directory"),
            (
                delta(".claude/settings.json", bk),
                "(.claude/settings.json is protected)",
            ),
            (snap(".vscode/tasks.json", bk), "(.vscode is protected)"),
            (snap("sub/dir/.envrc", bk), "(.envrc is protected)"),
            (snap("t/homelink/.bashrc", bk), "symbolic link"),
            (snap("t/dirlink/a", bk), "symbolic link"),
            (delta("t/filelink", bk), "symbolic link"),
            (snap("", bk), "the project directory itself"),
            (
                snap(
                    "src/a.rs",
                    r#"{"backupFileName":"x@v1","realParentDir":"/home/u"}"#,
                ),
                "realParentDir /home/u that is not its parent",
            ),
            (snap("src/a.rs", "\"x@v1\""), "not an object"),
            (
                format!(r#"{{"type":"user","cwd":"{c}_x"}}"#),
                "not in this session's project",
            ),
            (
                r#"{"type":"user","cwd":"/elsewhere"}"#.into(),
                "another project's conversation",
            ),
            (
                r#"{"a":[{"b":{"trackingPath":"/etc/x"}}]}"#.into(),
                "outside the project",
            ),
            (
                r#"{"x":{"tracking\u0050ath":"/etc/x"}}"#.into(),
                "outside the project",
            ),
            (
                r#"{"trackedFileBackups":["/etc/x"]}"#.into(),
                "not an object",
            ),
            (r#"{"trackingPath":7}"#.into(), "not a string"),
            ("[1,".into(), "not JSON"),
        ];
        for (line, want) in cases {
            let mut p = Project::new(&cwd, PROTECT);
            let ok = format!(r#"{{"type":"user","cwd":"{c}"}}"#);
            let got = scan(&mut p, &[ok, line.clone()]);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(want)),
                "{line}: want {want:?}, got {got:?}"
            );
        }
    }
}
