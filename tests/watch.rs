//! The project's code-steering git files while a session runs and after: the third
//! red-team report (notes/attack-3.md, A3-1 and A3-2). A `.git/commondir` the session
//! writes is moved while it runs, before a `git status` on the host (a shell prompt, an
//! editor) reads the session's config; a git repository the session nests in the project
//! with a `core.fsmonitor` is defused at exit, while one `git init` or `git clone` made
//! keeps its config. Real sandboxes, the real binary, as root and as the unprivileged
//! user; every probe first proves the sandbox ran and is shown to report the escape under
//! `--profile compat` (no sandbox), so none passes because nothing ran.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Proj {
    env: TestEnv,
    proj: PathBuf,
    nonce: String,
}

fn project(user: As) -> Proj {
    let env = TestEnv::new(user);
    let proj = env.home.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    let st = Command::new("git")
        .args(["init", "-q"])
        .arg(&proj)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(proj.join("README"), "hi\n").unwrap();
    env.chown_all(env.dir.path());
    let nonce = format!(
        "csbox-watch-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    Proj { env, proj, nonce }
}

impl Proj {
    /// `git ARGS` on the host, in `dir`, as the test's user (what a prompt runs).
    fn host_git(&self, dir: &Path, args: &[&str]) {
        let _ = self
            .env
            .command("git")
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
    }

    fn run(&self, profile: &str, script: &str) -> std::process::Child {
        self.spawn(profile, &["sh", "-c", script])
    }

    /// `csbox run --profile PROFILE -- CMD…` in the project, its output piped.
    fn spawn(&self, profile: &str, cmd: &[&str]) -> std::process::Child {
        self.env
            .csbox(&[&["run", "--profile", profile, "--"], cmd].concat())
            .current_dir(&self.proj)
            .env("NONCE", &self.nonce)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Let the session waiting for `go` end; its output, once it proved the sandbox ran.
    fn go(&self, child: std::process::Child) -> std::process::Output {
        std::fs::write(self.proj.join("go"), "").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            stdout(&out).contains(&self.nonce),
            "the sandbox did not run: {}",
            stderr(&out)
        );
        out
    }

    fn pwned(&self) -> bool {
        std::fs::read_to_string(self.proj.join("pwned")).is_ok_and(|s| s.contains(&self.nonce))
    }
}

/// Wait for `p` to exist (the session got there), at most 20 s.
fn wait_for(p: &Path) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Wait in the session for the host's `go` (at most 10 s).
const WAIT_GO: &str =
    "touch ready; i=0; while [ ! -e go ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done";

const FSMONITOR: &str =
    r#"printf '[core]\n\tfsmonitor = "echo %s > '\''%s/pwned'\''; false"\n' "$NONCE" "$PWD""#;

/// A3-1: the session points git at a config of its own with `.git/commondir`, then waits;
/// meanwhile the user's prompt runs `git status` in the project on the host.
fn commondir_while_running(user: As, profile: &str) -> bool {
    let p = project(user);
    let script = format!(
        "echo $NONCE; mkdir -p .git/x && {FSMONITOR} > .git/x/config && for d in objects refs; do ln -s ../$d .git/x/$d; done; \
         echo x > .git/commondir; {WAIT_GO}"
    );
    let child = p.run(profile, &script);
    assert!(
        wait_for(&p.proj.join("ready")),
        "the session never got to write its commondir"
    );
    // The prompt's git, as soon as the file is there (and once more a little later).
    p.host_git(&p.proj, &["status", "--short"]);
    std::thread::sleep(Duration::from_millis(100));
    p.host_git(&p.proj, &["status", "--short"]);
    let out = p.go(child);
    let escaped = p.pwned();
    if !escaped && profile != "compat" {
        assert!(
            stderr(&out).contains("commondir"),
            "no word of the move: {}",
            stderr(&out)
        );
    }
    escaped
}

#[test]
fn a_commondir_is_moved_before_a_git_on_the_host_reads_it() {
    for u in users() {
        for prof in ["default", "strict"] {
            assert!(
                !commondir_while_running(u, prof),
                "ESCAPE under {prof} as {}",
                u.label()
            );
        }
    }
    assert!(
        commondir_while_running(*users().last().unwrap(), "compat"),
        "the probe cannot report an escape"
    );
}

/// A8-3: the project's `.git/hooks` is missing at launch (a git setup that makes none, or
/// removed); the session makes it with a `pre-commit`, then waits; meanwhile the user
/// commits on the host. The hook must be gone before that commit runs it.
fn missing_hooks_while_running(user: As, profile: &str) -> bool {
    let p = project(user);
    std::fs::remove_dir_all(p.proj.join(".git/hooks")).unwrap();
    let script = format!(
        "echo $NONCE; mkdir .git/hooks && sleep 0.3 && \
         printf '#!/bin/sh\necho %s > \"%s/pwned\"\n' \"$NONCE\" \"$PWD\" > .git/hooks/t && \
         chmod +x .git/hooks/t && mv .git/hooks/t .git/hooks/pre-commit; {WAIT_GO}"
    );
    let child = p.run(profile, &script);
    assert!(
        wait_for(&p.proj.join("ready")),
        "the session never got to write its hook"
    );
    std::thread::sleep(Duration::from_millis(1500));
    p.host_git(
        &p.proj,
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
    );
    let _ = p.go(child);
    p.pwned()
}

#[test]
fn a_hook_added_to_a_hooks_dir_made_while_it_runs_is_moved_before_a_host_commit() {
    for u in users() {
        for prof in ["default", "strict"] {
            assert!(
                !missing_hooks_while_running(u, prof),
                "ESCAPE under {prof} as {}",
                u.label()
            );
        }
    }
    assert!(
        missing_hooks_while_running(*users().last().unwrap(), "compat"),
        "the probe cannot report an escape"
    );
}

/// A3-2: a repository nested in the project with a `core.fsmonitor` (or looking like a
/// bare one), hidden from the outer `git status`; after the session, the user runs git in
/// it. `which` names the variant.
fn nested(user: As, profile: &str, which: &str) -> bool {
    let p = project(user);
    let make = match which {
        "dir" => format!("mkdir -p src && cd src && git init -q && {FSMONITOR} >> .git/config"),
        // Bare-looking, made a work tree of itself: git in `src/` takes it as its repository.
        "bare" => r#"mkdir -p src && cd src && git init -q --bare && printf '[core]\n\tbare = false\n\tworktree = %s\n\tfsmonitor = "echo %s > '\''%s/pwned'\''; false"\n' "$PWD" "$NONCE" "$PWD" >> config"#.to_string(),
        "hook" => r#"mkdir -p src && cd src && git init -q && printf '#!/bin/sh\necho %s > ../pwned\n' "$NONCE" > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit"#.to_string(),
        _ => unreachable!(),
    };
    let script = format!("echo $NONCE; {make} && echo src/ >> ../.git/info/exclude; true");
    let out = p.run(profile, &script).wait_with_output().unwrap();
    assert!(
        stdout(&out).contains(&p.nonce),
        "the sandbox did not run: {}",
        stderr(&out)
    );
    let src = p.proj.join("src");
    p.host_git(&src, &["status", "--short"]);
    if which == "hook" {
        p.host_git(
            &src,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "x",
            ],
        );
    }
    // The nonce lands in proj/pwned from src (the payload writes ../pwned or $PWD/pwned).
    p.pwned() || std::fs::read_to_string(src.join("pwned")).is_ok_and(|s| s.contains(&p.nonce))
}

#[test]
fn a_repository_nested_in_the_project_cannot_steer_a_later_git() {
    for which in ["dir", "bare", "hook"] {
        for u in users() {
            assert!(
                !nested(u, "default", which),
                "ESCAPE ({which}) as {}",
                u.label()
            );
        }
        assert!(
            !nested(*users().last().unwrap(), "strict", which),
            "ESCAPE ({which}) under strict"
        );
        assert!(
            nested(*users().last().unwrap(), "compat", which),
            "the {which} probe cannot report an escape"
        );
    }
}

/// Useful: what `git init` and `git clone` make inside the project is kept as git made it.
#[test]
fn git_init_and_clone_inside_the_project_keep_their_repositories() {
    for u in users() {
        let p = project(u);
        p.host_git(
            &p.proj,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "one",
            ],
        );
        let script = "echo $NONCE; git init -q sub && git clone -q . cloned && git -C cloned log --oneline | head -1";
        let out = p.run("default", script).wait_with_output().unwrap();
        assert!(
            out.status.success() && stdout(&out).contains(&p.nonce),
            "{}",
            stderr(&out)
        );
        for d in ["sub", "cloned"] {
            let cfg = p.proj.join(d).join(".git/config");
            assert!(cfg.is_file(), "{d}: its config was moved: {}", stderr(&out));
        }
        assert!(p.proj.join("cloned/.git/hooks").is_dir());
        assert!(!stderr(&out).contains("quarantine"), "{}", stderr(&out));
    }
}

/// Repositories nested in the project (`git init`, `git config`, `git remote add`, `git
/// commit` in each, one after the other, as a test suite's fixtures make them). The live
/// watch wakes on each rename of a lock file over their config and looks while git is
/// still at it (`git init` renames four in a row): none of git's commands fails, no config
/// is moved, every one holds all git wrote, and the session is not stopped. A look that
/// raced those renames took the replaced config's link count of 0 for a second name and
/// moved what git was writing ("invalid config file" under load in hardening.rs).
#[test]
fn git_in_many_nested_repositories_is_never_disturbed() {
    const N: usize = 100;
    let script = format!(
        "echo $NONCE; for i in $(seq {N}); do \
         git init -q n$i && git -C n$i config user.email t@t && git -C n$i config user.name t && \
         git -C n$i remote add origin https://example.com/r.git && echo $i > n$i/f && \
         git -C n$i add f && git -C n$i commit -q -m c$i || {{ echo \"git failed in n$i\"; exit 1; }}; \
         done; echo all-made"
    );
    for u in users() {
        let p = project(u);
        let out = p.run("strict", &script).wait_with_output().unwrap();
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(
            out.status.success() && o.contains(&p.nonce) && o.contains("all-made"),
            "as {}: {o}{e}",
            u.label()
        );
        assert!(!e.contains("moved it"), "as {}: {e}", u.label());
        assert_eq!(quarantined(&p), Vec::<String>::new(), "as {}", u.label());
        for i in 1..=N {
            let cfg = std::fs::read_to_string(p.proj.join(format!("n{i}/.git/config")));
            let cfg = cfg.unwrap_or_else(|e| panic!("as {}: n{i}'s config: {e}", u.label()));
            for line in [
                "repositoryformatversion = 0",
                "bare = false",
                "email = t@t",
                "name = t",
                "url = https://example.com/r.git",
            ] {
                assert!(
                    cfg.contains(line),
                    "as {}: n{i}'s config lacks {line:?}: {cfg}",
                    u.label()
                );
            }
        }
    }
}

/// Red-team 4's ways past the quarantine: a read-only parent, a link on the way, a git
/// dir inside the main `.git`, the same names in a subdirectory, an unreadable directory
/// on the way to a nested repository. Each is a (name, script, what shows the escape).
fn bypass(user: As, profile: &str, script: &str, escaped: &dyn Fn(&Proj) -> bool) -> bool {
    let p = project(user);
    let out = p
        .run(profile, &format!("echo $NONCE; {script}; true"))
        .wait_with_output()
        .unwrap();
    assert!(
        stdout(&out).contains(&p.nonce),
        "the sandbox did not run: {}",
        stderr(&out)
    );
    escaped(&p)
}

fn git_ran_in(p: &Proj, rel: &str) -> bool {
    let dir = p.proj.join(rel);
    p.host_git(&dir, &["status", "--short"]);
    p.pwned() || std::fs::read_to_string(dir.join("pwned")).is_ok_and(|s| s.contains(&p.nonce))
}

#[test]
fn the_quarantine_is_not_kept_off_by_modes_links_or_places() {
    let exists =
        |rel: &'static str| move |p: &Proj| std::fs::symlink_metadata(p.proj.join(rel)).is_ok();
    let cases: Vec<(&str, String, Box<dyn Fn(&Proj) -> bool>)> = vec![
        (
            "read-only .git",
            format!("mkdir -p .git/x && {FSMONITOR} > .git/x/config && for d in objects refs; do ln -s ../$d .git/x/$d; done; echo x > .git/x/cd; mv .git/x/cd .git/commondir; chmod 0555 .git"),
            Box::new(|p: &Proj| git_ran_in(p, ".")),
        ),
        (
            "read-only dir renamed into place",
            r#"mkdir .cargo.tmp && printf '[build]\nrustc-wrapper = "/tmp/x"\n' > .cargo.tmp/config.toml && chmod 0555 .cargo.tmp && mv .cargo.tmp .cargo"#.into(),
            Box::new(exists(".cargo/config.toml")),
        ),
        (
            "a link on the way",
            r#"mkdir -p t/c && printf '[build]\nrustc-wrapper = "/tmp/x"\n' > t/c/config.toml && ln -s t/c .cargo"#.into(),
            Box::new(exists(".cargo/config.toml")),
        ),
        (
            "a git dir inside .git",
            format!("git init -q --separate-git-dir=.git/x2 sub2 && cd sub2 && {FSMONITOR} >> ../.git/x2/config"),
            Box::new(|p: &Proj| git_ran_in(p, "sub2")),
        ),
        (
            "an .npmrc in a subdirectory",
            r#"mkdir -p packages/web && echo "script-shell=/tmp/evil" > packages/web/.npmrc"#.into(),
            Box::new(exists("packages/web/.npmrc")),
        ),
        (
            "an unreadable dir on the way",
            format!("mkdir -p lib/core && cd lib/core && git init -q && {FSMONITOR} >> .git/config && cd ../.. && chmod 111 lib"),
            Box::new(|p: &Proj| {
                // The user's own shell can still cd through an x-only dir.
                git_ran_in(p, "lib/core")
            }),
        ),
    ];
    let unpriv = *users().last().unwrap();
    for (what, script, escaped) in &cases {
        for u in users() {
            assert!(
                !bypass(u, "default", script, escaped.as_ref()),
                "ESCAPE ({what}) as {}",
                u.label()
            );
        }
        assert!(
            bypass(unpriv, "compat", script, escaped.as_ref()),
            "the probe ({what}) cannot report an escape"
        );
    }
}

/// A4-1: a session that puts a watched file back again and again (each rename puts a
/// whole file in place for a moment) is stopped.
#[test]
fn a_session_that_keeps_planting_a_watched_file_is_stopped() {
    for u in users() {
        let p = project(u);
        let script = "echo $NONCE; mkdir -p .git/x; i=0; while [ $i -lt 200 ]; do echo x > .git/x/cd; mv .git/x/cd .git/commondir; sleep 0.01; i=$((i+1)); done; echo survived";
        let out = p.run("default", script).wait_with_output().unwrap();
        assert!(
            stdout(&out).contains(&p.nonce),
            "the sandbox did not run: {}",
            stderr(&out)
        );
        assert!(
            !stdout(&out).contains("survived"),
            "it was not stopped: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("csbox stopped it"),
            "{}",
            stderr(&out)
        );
        assert!(!p.proj.join(".git/commondir").exists());
    }
}

/// Red-team 5: alternating names does not buy a moment per name and plant: past 12 moves
/// in all, the session is stopped too.
#[test]
fn a_session_that_plants_many_watched_files_is_stopped() {
    let p = project(*users().last().unwrap());
    let script = "echo $NONCE; mkdir -p .git/x; i=0; while [ $i -lt 40 ]; do for n in .envrc .npmrc .mcp.json .lefthook.yml .pdbrc; do echo x > .git/x/t; mv .git/x/t $n; done; sleep 0.05; i=$((i+1)); done; echo survived";
    let out = p.run("default", script).wait_with_output().unwrap();
    assert!(
        stdout(&out).contains(&p.nonce),
        "the sandbox did not run: {}",
        stderr(&out)
    );
    assert!(
        !stdout(&out).contains("survived"),
        "it was not stopped: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("csbox stopped it"),
        "{}",
        stderr(&out)
    );
}

/// Red-team 9 (A7-7): a hostile session plants many watched files while a benign one
/// runs in the same project. Each watch sees the other's files, and nothing tells which
/// session made them: the benign one must not be stopped for the hostile one's files (it
/// was), and the files are moved all the same.
#[test]
fn a_benign_session_is_not_stopped_for_another_sessions_files() {
    let p = project(*users().last().unwrap());
    let benign = p.run(
        "default",
        "echo $NONCE; touch ready; i=0; while [ ! -e go ] && [ $i -lt 750 ]; do sleep 0.02; i=$((i+1)); done; echo benign-done",
    );
    assert!(
        wait_for(&p.proj.join("ready")),
        "the benign session never started"
    );
    let hostile = "echo $NONCE; i=0; while [ $i -lt 40 ]; do mkdir -p k$i && echo x > k$i/.envrc; sleep 0.05; i=$((i+1)); done; sleep 1; echo hostile-done";
    let out = p.run("default", hostile).wait_with_output().unwrap();
    assert!(stdout(&out).contains(&p.nonce), "{}", stderr(&out));
    let b = p.go(benign);
    assert!(
        b.status.success() && stdout(&b).contains("benign-done"),
        "the benign session was stopped: {:?} {}",
        b.status,
        stderr(&b)
    );
    let left: Vec<_> = (0..40)
        .map(|i| p.proj.join(format!("k{i}/.envrc")))
        .filter(|f| f.exists())
        .collect();
    assert!(left.is_empty(), "left on the host: {left:?}");
    let both = format!("{}{}", stderr(&out), stderr(&b));
    assert!(
        both.contains("cannot tell which of the two") && !both.contains("could NOT be moved"),
        "no word of the shared project, or a move the other session made first reported as failed: {both}"
    );
}

/// Red-team 5, A5-2: a submodule's `.git` file rewritten to point at a git dir of the
/// session's would make a plain `git status` at the top run its fsmonitor, while the
/// session runs: the file is read-only inside.
#[test]
fn a_submodules_git_file_cannot_be_pointed_elsewhere() {
    let attempt = |u: As, profile: &str| -> bool {
        let p = project(u);
        let other = p.env.home.join("other");
        let git = |dir: &Path, args: &[&str]| {
            let st = Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "protocol.file.allow=always",
                    "-c",
                    "safe.directory=*",
                ])
                .args(args)
                .current_dir(dir)
                .env("HOME", &p.env.home)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&st.stderr)
            );
        };
        std::fs::create_dir_all(&other).unwrap();
        git(&other, &["init", "-q"]);
        git(&other, &["commit", "-q", "--allow-empty", "-m", "o"]);
        git(
            &p.proj,
            &["submodule", "add", "-q", other.to_str().unwrap(), "sm"],
        );
        git(&p.proj, &["commit", "-q", "-m", "sm"]);
        p.env.chown_all(p.env.dir.path());
        let script = format!(
            "echo $NONCE; mkdir -p evil && cp -r .git/modules/sm/. evil/ && printf '[core]\\n\\tworktree = %s/sm\\n' \"$PWD\" >> evil/config && {FSMONITOR} >> evil/config && \
             echo \"gitdir: $PWD/evil\" > sm/.git 2>/dev/null; {WAIT_GO}"
        );
        let child = p.run(profile, &script);
        assert!(
            wait_for(&p.proj.join("ready")),
            "the session never got there"
        );
        p.host_git(&p.proj, &["status", "--short"]);
        let out = p.go(child);
        p.pwned()
            || std::fs::read_to_string(p.proj.join("evil/pwned"))
                .is_ok_and(|s| s.contains(&p.nonce))
    };
    for u in users() {
        assert!(!attempt(u, "default"), "ESCAPE as {}", u.label());
    }
    assert!(
        attempt(*users().last().unwrap(), "compat"),
        "the probe cannot report an escape"
    );
}

/// Poll until `gone` holds, at most `secs` seconds; whether it did.
fn within(secs: u64, gone: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if gone() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    gone()
}

/// The entries of the session's quarantine dirs, for `p`'s user.
fn quarantined(p: &Proj) -> Vec<String> {
    let sessions = p.env.home.join(".local/share/csbox/sessions");
    let mut out = Vec::new();
    for s in std::fs::read_dir(sessions).into_iter().flatten().flatten() {
        let q = s.path().join("quarantine");
        for e in std::fs::read_dir(q).into_iter().flatten().flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Files named `names` are in the session's quarantine, and csbox said it moved
/// `pkg/r/.git/config`.
fn in_quarantine(p: &Proj, out: &std::process::Output, names: &[&str]) {
    let q = quarantined(p);
    for name in names {
        assert!(
            q.iter().any(|e| e.ends_with(&format!("-{name}"))),
            "{name} is not in the quarantine ({q:?}): {}",
            stderr(out)
        );
    }
    assert!(stderr(out).contains("pkg/r/.git/config"), "{}", stderr(out));
}

/// Red-team 5, A5-1: code-steering files the session makes below the top of the project
/// (a nested repository with a `core.fsmonitor`, a bare one, `src/.npmrc`,
/// `pkg/c/.cargo/config.toml`, a directory made and filled elsewhere and renamed in,
/// files matching a protect pattern, at the top and below it: red-team 9, A9-6) are
/// gone from the project within a couple of seconds while the session still runs, and a
/// host `git status` in the nested repository runs nothing. True when one of them stayed
/// (what `--profile compat`, with no watch, shows).
fn deep_while_running(user: As, profile: &str) -> bool {
    let p = project(user);
    let script = format!(
        "echo $NONCE; mkdir -p src pkg/c/.cargo deep t/x/y && echo 'script-shell=/tmp/evil' > src/.npmrc && \
         printf '[build]\\nrustc-wrapper = \"/tmp/x\"\\n' > pkg/c/.cargo/config.toml && \
         echo '{{}}' > w.code-workspace && \
         git init -q pkg/r && (cd pkg/r && {FSMONITOR} >> .git/config) && \
         git init -q --bare bare1 && git -C bare1 config core.fsmonitor 'echo x' && \
         mkdir -p t/m/n && echo 'script-shell=/tmp/evil' > t/m/n/.npmrc && mv t/m deep/ && \
         sleep 1 && printf '[hooks]\\nenter = \"echo x\"\\n' > pkg/c/mise.dev.toml && {WAIT_GO}"
    );
    let child = p.run(profile, &script);
    assert!(
        wait_for(&p.proj.join("ready")),
        "the session never got to make its files"
    );
    let deep = [
        "src/.npmrc",
        "pkg/c/.cargo/config.toml",
        "pkg/r/.git/config",
        "bare1/config",
        "deep/m/n/.npmrc",
        // A protect pattern's (`mise.*.toml`, `*.code-workspace`), below the top and at it.
        "pkg/c/mise.dev.toml",
        "w.code-workspace",
    ];
    let left = |p: &Proj| -> Vec<&str> {
        deep.iter()
            .copied()
            .filter(|r| std::fs::symlink_metadata(p.proj.join(r)).is_ok())
            .collect()
    };
    within(3, || left(&p).is_empty());
    let still = left(&p);
    // The prompt's git in the nested repository, while the session runs.
    let ran = git_ran_in(&p, "pkg/r");
    let out = p.go(child);
    let escaped = ran || !still.is_empty();
    if profile != "compat" {
        assert!(
            !escaped,
            "ESCAPE under {profile} as {}: still in the project {still:?}, git ran the payload: {ran}; {}",
            user.label(),
            stderr(&out)
        );
        in_quarantine(&p, &out, &[".npmrc", "config.toml", "config"]);
    }
    escaped
}

#[test]
fn code_steering_files_made_deep_in_the_project_are_moved_while_it_runs() {
    for u in users() {
        assert!(!deep_while_running(u, "default"));
    }
    assert!(!deep_while_running(*users().last().unwrap(), "strict"));
    assert!(
        deep_while_running(*users().last().unwrap(), "compat"),
        "the probe cannot report an escape"
    );
}

/// The watch runs outside the sandbox: a directory it watches that the session renames
/// away (into a nested git dir, where the tree is not walked again, so the watch keeps
/// its old path) and replaces by a link to a directory outside the project (the user's,
/// with an `.npmrc` made after the run began) must not make it move, or look into, what
/// the link points at; a directory renamed within the tree is still watched under its new
/// name. Under compat (no watch), the files in the project stay, which the test sees.
fn swapped_for_a_link(user: As, profile: &str) -> bool {
    let p = project(user);
    let outside = p.env.home.join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    p.env.chown_all(&outside);
    let script = format!(
        "echo $NONCE; mkdir -p d/sub e/sub && git init -q n && touch ready1 && i=0; while [ ! -e go1 ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done; \
         mv d n/.git/hid && mv e e2 && ln -s \"$OUT\" d && ln -s \"$OUT\" e && \
         echo x > n/.git/hid/sub/.npmrc && echo x > e2/sub/.npmrc && echo x > e2/.npmrc && {WAIT_GO}"
    );
    let child = p
        .env
        .csbox(&["run", "--profile", profile, "--", "sh", "-c", &script])
        .current_dir(&p.proj)
        .env("NONCE", &p.nonce)
        .env("OUT", &outside)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&p.proj.join("ready1")),
        "the session never got there"
    );
    // Made after the run began: a watch that followed the link would take them.
    std::thread::sleep(Duration::from_millis(300));
    for f in [".npmrc", "sub/.npmrc"] {
        std::fs::write(outside.join(f), "mine\n").unwrap();
    }
    p.env.chown_all(&outside);
    std::fs::write(p.proj.join("go1"), "").unwrap();
    assert!(
        wait_for(&p.proj.join("ready")),
        "the session never got there"
    );
    let moved = within(3, || {
        !p.proj.join("e2/.npmrc").exists() && !p.proj.join("e2/sub/.npmrc").exists()
    });
    let out = p.go(child);
    for f in [".npmrc", "sub/.npmrc"] {
        assert_eq!(
            std::fs::read_to_string(outside.join(f)).ok().as_deref(),
            Some("mine\n"),
            "the watch touched {f} outside the project through a link: {}",
            stderr(&out)
        );
    }
    assert!(!stderr(&out).contains("outside"), "{}", stderr(&out));
    moved
}

#[test]
fn the_live_watch_follows_no_link_out_of_the_project() {
    for u in users() {
        assert!(
            swapped_for_a_link(u, "default"),
            "the renamed directory's files were not moved as {}",
            u.label()
        );
    }
    assert!(
        !swapped_for_a_link(*users().last().unwrap(), "compat"),
        "the probe cannot tell a moved file from one left"
    );
}

/// A4-1 below the top: a session that puts `pkg/a/.npmrc` back again and again is
/// stopped as one that does it at the top is; under compat (no watch) it runs on.
fn deep_replants(user: As, profile: &str) -> (bool, std::process::Output) {
    let p = project(user);
    let script = "echo $NONCE; mkdir -p pkg/a; i=0; while [ $i -lt 200 ]; do echo x > pkg/t; mv pkg/t pkg/a/.npmrc; sleep 0.01; i=$((i+1)); done; echo survived";
    let out = p.run(profile, script).wait_with_output().unwrap();
    assert!(
        stdout(&out).contains(&p.nonce),
        "the sandbox did not run: {}",
        stderr(&out)
    );
    (!stdout(&out).contains("survived"), out)
}

#[test]
fn a_session_that_keeps_planting_a_file_deep_in_the_project_is_stopped() {
    for u in users() {
        let (stopped, out) = deep_replants(u, "default");
        assert!(
            stopped,
            "it was not stopped as {}: {}",
            u.label(),
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("pkg/a/.npmrc") && stderr(&out).contains("csbox stopped it"),
            "{}",
            stderr(&out)
        );
    }
    let (stopped, out) = deep_replants(*users().last().unwrap(), "compat");
    assert!(!stopped, "the probe cannot tell: {}", stderr(&out));
}

/// Red-team 6, A6-1: a nested repository's config that `git init` wrote (accepted), made
/// hostile with no close-after-write in its directory: `link` through a hard link made
/// elsewhere in the project, `fd` through an fd kept open, `mmap` through a mapping after
/// its close. Run by python3 in the session, which then stays alive.
const HELD: &str = r##"
import os, sys, subprocess, time, mmap
way, nonce = sys.argv[1], os.environ["NONCE"]
print(nonce, flush=True)
subprocess.run(["git", "init", "-q", "pkg/r"], check=True)
c = "pkg/r/.git/config"
if way == "mmap":
    open(c, "a").write("#" + " " * 200 + "\n")
os.makedirs("t")
time.sleep(1)  # the watch has looked at it, and let it be
pay = ('[core]\n\tfsmonitor = "echo %s > \'%s/pwned\'; false"\n' % (nonce, os.getcwd())).encode()
if way == "link":
    os.link(c, "t/l")
    with open("t/l", "ab") as f: f.write(pay)
elif way == "fd":
    keep = os.open(c, os.O_WRONLY | os.O_APPEND); os.write(keep, pay)
else:
    fd = os.open(c, os.O_RDWR); m = mmap.mmap(fd, 0); os.close(fd); time.sleep(0.5)
    s = m.size(); m[s - len(pay) - 1:s - 1] = pay; m[s - len(pay) - 2] = 10; m[s - 1] = 10
open("ready", "w").close()
i = 0
while not os.path.exists("go") and i < 500:
    time.sleep(0.02); i += 1
"##;

/// A6-1 by `way` while the session runs: the config is gone from the project (and in the
/// quarantine) within 2 s, and a host `git status` in the nested repository runs nothing.
/// True when it escaped (what `--profile compat` shows).
fn held_config(user: As, profile: &str, way: &str) -> bool {
    let p = project(user);
    let child = p.spawn(profile, &["python3", "-c", HELD, way]);
    assert!(
        wait_for(&p.proj.join("ready")),
        "the session never got to make its repository ({way})"
    );
    let config = p.proj.join("pkg/r/.git/config");
    let gone = within(2, || std::fs::symlink_metadata(&config).is_err());
    let ran = git_ran_in(&p, "pkg/r");
    let out = p.go(child);
    let escaped = ran || !gone;
    if profile != "compat" {
        assert!(
            !escaped,
            "ESCAPE ({way}) under {profile} as {}: config still there: {}, git ran the payload: {ran}; {}",
            user.label(),
            !gone,
            stderr(&out)
        );
        in_quarantine(&p, &out, &["config"]);
    }
    escaped
}

/// A6-1 by `way`, as each user under `default`, once under `strict`; and the probe's
/// escape under `compat`.
fn held_config_is_moved(way: &str) {
    for u in users() {
        assert!(!held_config(u, "default", way));
    }
    let u = *users().last().unwrap();
    assert!(!held_config(u, "strict", way));
    assert!(
        held_config(u, "compat", way),
        "the probe cannot report an escape ({way})"
    );
}

#[test]
fn a_nested_config_written_through_a_hard_link_is_moved_while_it_runs() {
    held_config_is_moved("link");
}

#[test]
fn a_nested_config_written_through_an_fd_kept_open_is_moved_while_it_runs() {
    held_config_is_moved("fd");
}

#[test]
fn a_nested_config_written_through_a_mapping_after_its_close_is_moved_while_it_runs() {
    held_config_is_moved("mmap");
}
