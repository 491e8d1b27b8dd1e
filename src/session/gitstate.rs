//! A rebase, cherry-pick or revert left stopped in a git dir, looked at when a session
//! ends: git keeps what is left to do in files of the git dir, and the user's `git rebase
//! --continue` on the host does it. A session that leaves an interactive rebase stopped
//! and writes `exec <command>` into `rebase-merge/git-rebase-todo` has that command run
//! on the host, as the user, whenever they continue (red-team 7, A7-9). The same for a
//! strategy name in `rebase-merge/strategy` or in `sequencer/opts`' `options.strategy`:
//! git runs `git merge-<name>` for any but its own.
//!
//! What the session made or changed there (its change time is after the run began) and
//! holds such a line is moved into the quarantine; a rebase it left stopped with only
//! `pick`, `edit`, `break` and the like keeps its files. Only at exit: the session's own
//! `git rebase -i --exec 'make test'` rewrites the todo after each step, and moving it
//! while the rebase runs would break that rebase (and, put back at every step, stop the
//! session by the watch's kill rule).
//!
//! `sequencer/todo` (a cherry-pick or revert sequence) takes only `pick` or only `revert`
//! lines (git 2.47: "cannot cherry-pick during a revert" for anything else), so an `exec`
//! there runs nothing; it is moved all the same, git never writes one.
//!
//! The git dir is hostile: every file is opened beneath it without following a link and
//! without blocking, and read up to a bound; one git would follow a link to, or that is
//! too large to read, is moved.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::SystemTime;

use nix::sys::stat::Mode;

use super::quarantine::{changed_since, lstat_at, Sweep};
use crate::fsutil::{dir_flags, openat_nofollow, read_small_at};

/// Bytes of one state file read, at most (a todo for a rebase of 100 000 commits is
/// about 6 MiB); a larger one is moved.
const READ_CAP: u64 = 16 << 20;

/// The merge strategies git runs in-process or ships itself (`git merge -s`); any other
/// name makes git run `git-merge-<name>` from its exec path or `PATH`.
const STRATEGIES: &[&str] = &["ort", "recursive", "resolve", "octopus", "ours", "subtree"];

/// What is judged in a git dir: the state dir, and in it each file with its rule.
const STATE: &[(&str, &[(&str, Rule)])] = &[
    (
        "rebase-merge",
        &[
            ("git-rebase-todo", Rule::Todo),
            ("strategy", Rule::Strategy),
        ],
    ),
    ("sequencer", &[("todo", Rule::Todo), ("opts", Rule::Opts)]),
];

#[derive(Clone, Copy, Debug)]
enum Rule {
    /// A todo list: no `exec` (`x`) line.
    Todo,
    /// One strategy name: git's own.
    Strategy,
    /// The sequencer's options, git config syntax: `options.strategy` git's own.
    Opts,
}

/// Whether `text` of a state file under `rule` makes git run a command of its own.
fn steers(rule: Rule, text: &[u8]) -> bool {
    // git writes none of these with a NUL; its reader and this one could part ways there.
    if text.contains(&0) {
        return true;
    }
    match rule {
        Rule::Todo => text.split(|&b| b == b'\n').any(is_exec_line),
        Rule::Strategy => {
            let name = String::from_utf8_lossy(text);
            let name = name.trim();
            !name.is_empty() && !STRATEGIES.contains(&name)
        }
        Rule::Opts => {
            let c = crate::gitconfig::parse(&String::from_utf8_lossy(text));
            c.unread > 0
                || c.entries.iter().any(|e| {
                    e.section == "options"
                        && e.key == "strategy"
                        && !STRATEGIES.contains(&e.value.trim())
                })
        }
    }
}

/// A todo line git reads as `exec`: after blanks, `exec` or `x` and then a blank, a CR
/// or the end (sequencer.c `is_command`).
fn is_exec_line(line: &[u8]) -> bool {
    let start = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    let rest = &line[start..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r'))
        .unwrap_or(rest.len());
    matches!(&rest[..end], b"exec" | b"x")
}

/// Move what of git dir `g` (at `path`) the session made or changed since `since` and a
/// continued rebase or sequence would run (see the module doc).
pub(super) fn sweep(sweep: &mut Sweep<'_>, g: &OwnedFd, path: &Path, since: SystemTime) {
    for (dir, files) in STATE {
        let c = CString::new(*dir).expect("no NUL");
        let Some(st) = lstat_at(g, &c) else { continue };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            // git follows a link here (`rebase-merge -> ../../t/rm`) to a todo of the
            // session's.
            if changed_since(&st, since) {
                sweep.quarantine(g, &c, &path.join(dir), None);
            }
            continue;
        }
        let Ok(d) = openat_nofollow(g, dir, dir_flags(), Mode::empty()) else {
            continue;
        };
        for &(name, rule) in *files {
            let c = CString::new(name).expect("no NUL");
            let Some(st) = lstat_at(&d, &c) else { continue };
            if !changed_since(&st, since) {
                continue;
            }
            // Not a regular file (a link, a FIFO) or too large: read by git, not by csbox.
            let hostile = read_small_at(&d, name, READ_CAP).map_or(true, |t| steers(rule, &t));
            if hostile {
                sweep.quarantine(&d, &c, &path.join(dir).join(name), None);
            }
        }
    }
}

/// What the user's git does now that `moved` (a path [`sweep`] moved) is gone, and how
/// to have it back; None for a path of another name.
pub(super) fn after_move(moved: &Path) -> Option<String> {
    let name = moved.file_name()?.to_str()?;
    let parent = moved.parent()?.file_name()?.to_str()?;
    // What it was, what `--continue` does now, and when to move it back.
    let (what, now, back) = match (parent, name) {
        ("rebase-merge", "git-rebase-todo") => (
            "the todo of a rebase left stopped, with an exec line (a command git runs on your host)",
            "`git rebase --continue` in that repository stops with \"could not open '…/git-rebase-todo'\" and runs nothing; `git rebase --abort` puts the branch back where the rebase began",
            "read its exec lines and move it back to go on",
        ),
        ("rebase-merge", "strategy") => (
            "a rebase's merge strategy that is not git's own (git runs `git-merge-<name>` for it)",
            "`git rebase --continue` merges with git's default strategy",
            "move it back only if you know that program",
        ),
        ("sequencer", "todo") => (
            "the todo of a cherry-pick or revert left stopped, with a line git never writes there",
            "`git cherry-pick --continue` (or `git revert --continue`) fails; `--abort` ends the sequence",
            "read it and move it back to go on",
        ),
        ("sequencer", "opts") => (
            "the options of a cherry-pick or revert left stopped, with a merge strategy that is not git's own (git runs `git-merge-<name>` for it)",
            "`--continue` goes on with git's defaults",
            "move it back only if you know that program",
        ),
        (_, "rebase-merge" | "sequencer") => (
            "a link (or not a directory) where git keeps a stopped rebase's or sequence's state: git would follow it",
            "`git status` there shows none in progress",
            "look at what it points to before you move it back",
        ),
        // No other rule of the sweeps moves a path of these names.
        _ => return None,
    };
    Some(format!(
        "it is {what}: now {now}; {back} to {}",
        crate::human::printable_path(moved)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_todo_with_an_exec_line_steers_and_one_without_does_not() {
        let plain = b"pick 1234 a\nbreak\n# exec in a comment\nedit 5678 b\nreword 9 c\n";
        assert!(!steers(Rule::Todo, plain));
        for line in [
            "exec id",
            "x id",
            "  \texec id",
            "x\tid",
            "exec\r",
            "exec",
            "x",
        ] {
            let t = format!("pick 1 a\n{line}\npick 2 b\n");
            assert!(steers(Rule::Todo, t.as_bytes()), "{line:?}");
        }
        assert!(!steers(Rule::Todo, b"execute 1\nxx 2\n"));
        assert!(steers(Rule::Todo, b"pick 1 a\0\n"));
    }

    #[test]
    fn only_gits_own_strategies_are_left() {
        for s in ["ort\n", "recursive", "", "ours\n"] {
            assert!(!steers(Rule::Strategy, s.as_bytes()), "{s:?}");
        }
        assert!(steers(Rule::Strategy, b"evil\n"));
        assert!(!steers(
            Rule::Opts,
            b"[options]\n\tstrategy = ort\n\tstrategy-option = theirs\n\tedit = true\n"
        ));
        assert!(steers(Rule::Opts, b"[options]\n\tstrategy = evil\n"));
        assert!(steers(Rule::Opts, b"[options]\n\tStrategy = \"evil\"\n"));
    }
}
