//! The command line as a user meets it: every flag has a help line, the man pages list
//! the options `--help` lists, and `completions --install` puts each script where its
//! shell finds it (bash-completion really loads it and completes `csbox ru` to `run`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use common::{cannot_run, stderr, stdout, CSBOX};

/// Every argument of every (sub)command, hidden ones included, and every subcommand.
fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        if a.get_help().is_none() && a.get_long_help().is_none() {
            out.push(format!("{path} {}", a.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        let p = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            out.push(format!("{p} (the subcommand itself)"));
        }
        missing_help(sub, &p, out);
    }
}

#[test]
fn every_flag_and_subcommand_has_a_help_line() {
    let mut cmd = csbox::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    missing_help(&cmd, "csbox", &mut missing);
    assert!(missing.is_empty(), "no help text for: {missing:#?}");
    // The walk really sees the flags (a tree it could not read would pass vacuously).
    let run = cmd.find_subcommand("run").expect("csbox run");
    assert!(run
        .get_arguments()
        .any(|a| a.get_long() == Some("json-status")));
}

/// The option names a help or man text lists at the start of an entry: `  --name <N>`,
/// `  -h, --help`, indented `min..=max` spaces (descriptions are indented further).
fn options(text: &str, min: usize, max: usize) -> BTreeSet<String> {
    text.lines()
        .map(|l| (l.len() - l.trim_start().len(), l.trim_start()))
        .filter(|(indent, l)| (min..=max).contains(indent) && l.starts_with('-'))
        .map(|(_, l)| l)
        .flat_map(|l| {
            l.split(|c: char| c == ',' || c.is_whitespace() || c == '=')
                .take_while(|w| w.is_empty() || w.starts_with('-'))
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Plain text of a rendered page: no overstrike (`x\bx`) or SGR sequences.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{8}' => {
                out.pop();
            }
            '\u{1b}' => {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn man_text(page: &Path) -> Option<String> {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "200")
        .env("MANPAGER", "cat")
        .env("LANG", "C.UTF-8")
        .output()
        .ok()?;
    assert!(out.status.success(), "man -l {page:?}: {}", stderr(&out));
    Some(plain(&stdout(&out)))
}

#[test]
fn man_pages_list_the_same_options_as_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(CSBOX)
        .args(["man", "--out"])
        .arg(dir.path().join("man1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "csbox man: {}", stderr(&out));
    let pages: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    for want in [
        "csbox.1",
        "csbox-run.1",
        "csbox-gc.1",
        "csbox-profile-show.1",
    ] {
        assert!(
            pages.iter().any(|p| p.ends_with(&format!("/{want}"))),
            "{want} not among {pages:?}"
        );
    }
    assert!(
        !pages.iter().any(|p| p.ends_with("csbox-man.1")),
        "the hidden command has no page"
    );
    let file = dir.path().join("man1/csbox.1");
    let bad = Command::new(CSBOX)
        .args(["man", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "--out a file: {}", stderr(&bad));
    assert!(stderr(&bad).contains("not a directory"), "{}", stderr(&bad));
    if Command::new("man").arg("--version").output().is_err() {
        return cannot_run("man is not installed (apt-get install man-db)");
    }
    for page in &pages {
        let name = Path::new(page).file_stem().unwrap().to_str().unwrap();
        let words: Vec<&str> = name.split('-').skip(1).collect();
        let help = Command::new(CSBOX)
            .args(&words)
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success(), "csbox {words:?} --help");
        let from_help = options(&stdout(&help), 2, 6);
        let text = man_text(Path::new(page)).expect("man runs");
        let from_man = options(&text, 7, 7);
        assert!(
            from_help.contains("--help"),
            "{name}: no options read from --help:\n{}",
            stdout(&help)
        );
        assert_eq!(from_man, from_help, "{name}: man page vs --help\n{text}");
    }
}

/// A fake home with nothing in it: `--install` must create the directories.
fn bare_home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn install(home: &Path, shell: &str, env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new(CSBOX);
    c.args(["completions", shell, "--install"])
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn printed(shell: &str) -> Vec<u8> {
    let out = Command::new(CSBOX)
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn bash_completions_install_where_bash_completion_loads_them() {
    let home = bare_home();
    let out = install(home.path(), "bash", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = home
        .path()
        .join(".local/share/bash-completion/completions/csbox");
    assert_eq!(std::fs::read(&file).unwrap(), printed("bash"));
    assert!(
        stdout(&out).contains(file.to_str().unwrap()),
        "{}",
        stdout(&out)
    );
    // Installing again replaces the file (no error because it exists).
    assert!(install(home.path(), "bash", &[]).status.success());

    let loader = Path::new("/usr/share/bash-completion/bash_completion");
    if !loader.exists() {
        return cannot_run("bash-completion is not installed (apt-get install bash-completion)");
    }
    // What an interactive bash does when Tab is pressed after `csbox ru`: bash-completion's
    // loader finds the script by the command's name in the user's directory.
    let script = r#"source /usr/share/bash-completion/bash_completion
_completion_loader csbox
complete -p csbox
COMP_WORDS=(csbox ru); COMP_CWORD=1; COMP_LINE='csbox ru'; COMP_POINT=8
_clap_complete_csbox csbox ru csbox
echo "reply: ${COMPREPLY[*]}""#;
    // The script asks the csbox on PATH at each Tab.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_csbox"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut path = std::ffi::OsString::from(bin_dir.as_os_str());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap());
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("-F _clap_complete_csbox csbox"),
        "not loaded:\n{text}{}",
        stderr(&out)
    );
    assert!(
        text.contains("reply: run"),
        "csbox ru did not complete to run:\n{text}"
    );
}

#[test]
fn bash_completions_honour_xdg_data_home_and_the_user_dir_variable() {
    let home = bare_home();
    let data = home.path().join("data");
    assert!(install(home.path(), "bash", &[("XDG_DATA_HOME", &data)])
        .status
        .success());
    assert!(data.join("bash-completion/completions/csbox").is_file());
    let own = home.path().join("own");
    assert!(
        install(home.path(), "bash", &[("BASH_COMPLETION_USER_DIR", &own)])
            .status
            .success()
    );
    assert!(own.join("completions/csbox").is_file());
}

#[test]
fn zsh_and_fish_completions_install_in_their_user_dirs() {
    let home = bare_home();
    let out = install(home.path(), "zsh", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(home.path().join(".zfunc/_csbox")).unwrap(),
        printed("zsh")
    );
    assert!(
        stdout(&out).contains("fpath=(~/.zfunc $fpath)"),
        "{}",
        stdout(&out)
    );
    // A ~/.zshrc that already adds ~/.zfunc gets no advice.
    std::fs::write(home.path().join(".zshrc"), "fpath=(~/.zfunc $fpath)\n").unwrap();
    let out = install(home.path(), "zsh", &[]);
    assert!(!stdout(&out).contains("fpath=("), "{}", stdout(&out));

    let config = home.path().join("cfg");
    let out = install(home.path(), "fish", &[("XDG_CONFIG_HOME", &config)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(config.join("fish/completions/csbox.fish")).unwrap(),
        printed("fish")
    );
}

#[test]
fn completions_install_for_an_unknown_place_is_a_usage_error() {
    let home = bare_home();
    let out = install(home.path(), "elvish", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bash, zsh and fish"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "wrote nothing"
    );
}

/// Background update checks fail silently (no terminal); the next `csbox run` on a
/// terminal says so in one line, and one without a terminal does not.
#[test]
fn an_interactive_run_names_the_failing_update_checks() {
    use std::os::unix::fs::PermissionsExt;
    let env = common::TestEnv::new(common::As::me());
    let stub = env.home.join("claude-stub");
    std::fs::write(&stub, "#!/bin/sh\necho '2.1.197 (Claude Code)'\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Port 1 on loopback: nothing listens, each check fails at once.
    for _ in 0..3 {
        let out = env
            .csbox(&["update", "--check"])
            .env("CLAUDE_BIN", &stub)
            .env("CSBOX_REGISTRY", "http://127.0.0.1:1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    }
    let plain = env.run(&["run", "--rm", "--", "true"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(
        !stderr(&plain).contains("update check failed"),
        "{}",
        stderr(&plain)
    );
    // script(1) gives csbox a terminal, as a user's shell would.
    let cmd = format!("{} run --rm -- true", common::sh_quote(CSBOX));
    let out = env
        .command("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    if !out.status.success() && stdout(&out).contains("user namespace") {
        return cannot_run(&format!("csbox run cannot run here: {}", stdout(&out)));
    }
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("update check failed 3 times since") && text.contains("update.log"),
        "no failure notice on a terminal:\n{text}"
    );
}
