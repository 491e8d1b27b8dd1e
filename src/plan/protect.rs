//! The project's files that run code on the host later: which are bound read-only, which
//! directories are pinned (bound onto themselves, so they cannot be renamed aside), and
//! which paths are watched for what the session creates.
//!
//! git takes config and hooks from `$GIT_DIR/commondir` when there is one, per worktree
//! from `config.worktree`, and from what `core.hooksPath` and `include.path` name; a
//! submodule's from `modules/<name>/`. A protected path is bound only where it really
//! is, inside the project or a git dir: a link pointing elsewhere (`.git/config ->
//! ~/.ssh/id_ed25519`) would make the bind reach out of them, and an exporter's runtime
//! resolves the destination in a tree the session controls. Such a link is watched.

use std::path::{Path, PathBuf};

use super::facts::{Facts, GitLayout, NodeKind};
use super::input::PlanInput;
use super::model::{Watched, WatchedDir};

/// Project files that run code on the host later, relative to the project, when the
/// profile does not list its own: what Claude Code's own sandbox protects, what git
/// reads its config and hooks through, and what hook managers, dev containers and task
/// runners take commands from.
///
/// `profiles/default.json` lists the same (a test says so). Left writable on purpose:
/// `pnpm-workspace.yaml` (pnpm >= 10 reads settings there that name commands, like
/// `.npmrc`'s), because agents edit it in every pnpm monorepo as part of the work
/// (red-team 6, A6-3); `.env` (autoenv sources it, but it is every project's dotenv file).
pub const PROTECTED: &[&str] = &[
    ".git/hooks",
    ".git/config",
    ".git/commondir",
    ".git/config.worktree",
    // git never writes it; a bad one breaks every `git status` (red-team 8, A8-2).
    ".git/info/attributes",
    ".gitmodules",
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".claude/commands",
    ".claude/agents",
    ".claude/hooks",
    ".claude/skills",
    ".mcp.json",
    // Other coding agents' project config that starts commands (MCP servers, lint and
    // test commands) (red-team 7, A7-9).
    ".gemini/settings.json",
    ".cursor/mcp.json",
    ".aider.conf.yml",
    ".vscode",
    ".idea",
    ".envrc",
    // autoenv's and zsh-autoenv's files, sourced when a shell leaves or enters the
    // directory (red-team 7, A7-9).
    ".env.leave",
    ".autoenv.zsh",
    ".autoenv_leave.zsh",
    // What common `.envrc`s source, and the single-file form of `.devcontainer/` (its
    // initializeCommand runs on the host) (red-team 6, A6-3).
    ".envrc.local",
    ".devcontainer",
    ".devcontainer.json",
    ".pre-commit-config.yaml",
    ".husky",
    // What the hooks of hook managers run, or read their hook commands from: lint-staged
    // (a husky `npx lint-staged` hook), commitlint (commit-msg), husky <= 4, commitizen,
    // overcommit, simple-git-hooks (installs the hooks it names) (red-team 8, A8-4).
    ".lintstagedrc",
    ".lintstagedrc.json",
    ".lintstagedrc.yaml",
    ".lintstagedrc.yml",
    ".lintstagedrc.js",
    ".lintstagedrc.cjs",
    ".lintstagedrc.mjs",
    "lint-staged.config.js",
    "lint-staged.config.cjs",
    "lint-staged.config.mjs",
    "commitlint.config.js",
    "commitlint.config.cjs",
    "commitlint.config.mjs",
    "commitlint.config.ts",
    ".commitlintrc",
    ".commitlintrc.json",
    ".commitlintrc.yaml",
    ".commitlintrc.yml",
    ".commitlintrc.js",
    ".commitlintrc.cjs",
    ".huskyrc",
    ".huskyrc.json",
    ".huskyrc.js",
    ".czrc",
    ".overcommit.yml",
    ".simple-git-hooks.json",
    ".simple-git-hooks.js",
    "simple-git-hooks.json",
    "lefthook.yml",
    ".lefthook.yml",
    "lefthook.yaml",
    ".lefthook.yaml",
    "lefthook.toml",
    ".lefthook.toml",
    "lefthook.json",
    ".lefthook.json",
    "lefthook-local.yml",
    ".lefthook-local.yml",
    "lefthook-local.yaml",
    ".lefthook-local.yaml",
    "mise.toml",
    ".mise.toml",
    "mise.local.toml",
    ".mise.local.toml",
    ".mise",
    ".config/mise",
    ".config/mise.toml",
    // mise's own dir at the top (`mise/config.toml`, `mise/config.<env>.toml`: red-team
    // 9, A9-6), and rtx's (mise's old name) local file.
    "mise",
    ".rtx.toml",
    ".rtx.local.toml",
    // mise's per-environment files (`MISE_ENV=dev` reads `mise.dev.toml`): a pattern,
    // matched at the project's top (see [`matches`]).
    "mise.*.toml",
    ".mise.*.toml",
    // Editors that take commands from the project they open (language servers, tasks).
    // A VS Code workspace file's tasks (`runOn: folderOpen`), as `.vscode/`'s: a pattern.
    "*.code-workspace",
    ".zed",
    ".helix",
    ".nvim.lua",
    ".nvimrc",
    ".exrc",
    ".lazy.lua",
    ".dir-locals.el",
    ".dir-locals-2.el",
    ".vimrc",
    ".gvimrc",
    // REPLs that run a file of the directory they start in.
    ".pryrc",
    ".irbrc",
    // Build tools and package managers that take a command from the project's config
    // (red-team 3, A3-11): npm's script-shell and node-options, yarn's yarnPath, pnpm's
    // hooks, bun's preload, cargo's rustc-wrapper/runner/aliases, rustup's toolchain path,
    // bazel's --run_under, the JVM's -javaagent, maven's extensions and wrapper, pdb.
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".pnpmfile.cjs",
    ".pnpmfile.mjs",
    "bunfig.toml",
    ".cargo/config",
    ".cargo/config.toml",
    "rust-toolchain",
    "rust-toolchain.toml",
    ".bazelrc",
    ".bazeliskrc",
    ".bazelversion",
    ".lfsconfig",
    "gradle.properties",
    ".mvn",
    // sbt's launcher options (`-J-javaagent:`), the JVM options sbt and others read.
    ".sbtopts",
    ".jvmopts",
    ".pdbrc",
    // Other version control systems' repository config (hooks, pagers, diff tools).
    ".hg/hgrc",
    ".jj/repo/config.toml",
    // What a Claude Code on the host loads and no review sees (git-ignored by Claude).
    "CLAUDE.local.md",
    ".claude/rules",
    // What Claude Code's own sandbox keeps read-only: a scheduled task's prompt is sent
    // by the host's next `claude` in the project as the user's own turn (red-team 10,
    // A10-B2); launch configs, workflows and routines run commands.
    ".claude/scheduled_tasks.json",
    ".claude/launch.json",
    ".claude/workflows",
    ".claude/routines",
    // Other coding agents' project config that starts MCP servers or commands (A10-B6).
    ".amazonq",
    ".roo",
    ".kilocode",
    ".kiro",
    "opencode.json",
    ".opencode",
    ".codex/config.toml",
    ".qwen/settings.json",
    ".continue",
    ".windsurf",
    ".cursor/environment.json",
    ".cursor/hooks.json",
    ".junie",
    ".crush.json",
    ".theia/tasks.json",
    ".lefthook",
    ".lefthook-local",
    ".sl/config",
];

/// Whether `name` matches one of `patterns` (the protect list's, `ProjectView::patterns`).
pub fn matches_any(patterns: &[String], name: &[u8]) -> bool {
    patterns.iter().any(|p| matches_pattern(p, name))
}

/// Whether `name` (one entry of the project's top) matches `pattern`, a protect entry
/// with one `*` and no `/` (`*.code-workspace`, `mise.*.toml`): the `*` stands for one
/// or more characters. An entry without `*` matches nothing here (it is a path).
pub fn matches_pattern(pattern: &str, name: &[u8]) -> bool {
    let Some((pre, post)) = pattern.split_once('*') else {
        return false;
    };
    !pattern.contains('/')
        && name.len() > pre.len() + post.len()
        && name.starts_with(pre.as_bytes())
        && name.ends_with(post.as_bytes())
}

/// What a new linked worktree's git dir must not bring.
const WORKTREE_FILES: &[&str] = &["commondir", "config.worktree"];
/// A submodule's git dir: its config and hooks, and what points git elsewhere for them (A6-2).
const MODULE_FILES: &[&str] = &["config", "hooks", "commondir", "config.worktree"];

/// What [`protection`] decides for one project.
#[derive(Debug, Default)]
pub(super) struct Protection {
    pub protected: Vec<PathBuf>,
    pub pinned: Vec<PathBuf>,
    pub watched: Vec<Watched>,
    pub watched_dirs: Vec<WatchedDir>,
    pub patterns: Vec<String>,
}

fn list(prof: &crate::profile::Profile) -> Vec<&str> {
    if prof.protect.is_empty() {
        PROTECTED.to_vec()
    } else {
        prof.protect.iter().map(String::as_str).collect()
    }
}

/// The git dir a project's `.git/...` entries live in: the common dir of its worktree,
/// or, where there is no repository yet, the `.git` the session may create.
fn common(project: &Path, git: Option<&GitLayout>) -> PathBuf {
    git.map(|g| g.common.clone())
        .unwrap_or_else(|| project.join(".git"))
}

/// Every path the profile protects in this project, as spelled before resolving: a
/// pattern's, those of `top_names` (the project's top as listed at launch) it matches.
fn candidates(
    prof: &crate::profile::Profile,
    project: &Path,
    git: Option<&GitLayout>,
    top_names: &[PathBuf],
) -> Vec<PathBuf> {
    let common = common(project, git);
    let config = !prof.allow_git_config;
    let mut out: Vec<PathBuf> = Vec::new();
    for rel in list(prof) {
        if rel == ".git/config" && !config {
            continue;
        }
        if rel.contains('*') {
            out.extend(
                top_names
                    .iter()
                    .filter(|p| {
                        p.parent() == Some(project)
                            && p.file_name()
                                .is_some_and(|n| matches_pattern(rel, n.as_encoded_bytes()))
                    })
                    .cloned(),
            );
            continue;
        }
        // A linked worktree's `.git` is a file: its hooks and config are the common dir's.
        match rel.strip_prefix(".git/") {
            Some(inner) => out.push(common.join(inner)),
            None => out.push(project.join(rel)),
        }
    }
    if let Some(g) = git {
        // The top's own `.git` when it is a file (a linked worktree's, a submodule's work
        // tree): rewritten, it points every host git there at a git dir of the session's
        // (red-team 7, A7-2), as a submodule's `.git` file would.
        if g.gitdir != g.top.join(".git") {
            out.push(g.top.join(".git"));
        }
        out.extend(g.module_gitfiles.iter().cloned());
        for m in &g.modules {
            out.push(m.join("hooks"));
            // A submodule's git dir takes its config and hooks from where its `commondir`
            // points, as a linked worktree's does (red-team 6, A6-2).
            out.push(m.join("commondir"));
            if config {
                out.push(m.join("config"));
                out.push(m.join("config.worktree"));
            }
        }
        let own = (g.gitdir != g.common).then_some(&g.gitdir);
        for w in g.worktrees.iter().chain(own) {
            out.push(w.join("commondir"));
            // Where the worktree is: only `git worktree move`/`repair` write it, and a
            // wrong one lets `git worktree prune` drop the worktree (red-team 8, A8-2).
            out.push(w.join("gitdir"));
            if config {
                out.push(w.join("config.worktree"));
            }
        }
        out.extend(g.config_paths.iter().cloned());
    }
    out.dedup();
    out
}

/// Where a project's protected paths may lie, each a mount point of the plan: the
/// project, and the git dirs outside it (a linked worktree's common dir, and its own git
/// dir when that lies elsewhere).
pub(super) fn roots(project: &Path, git: Option<&GitLayout>) -> Vec<PathBuf> {
    let mut r = vec![project.to_path_buf()];
    for d in git.iter().flat_map(|g| [&g.common, &g.gitdir]) {
        if !r.iter().any(|x| d.starts_with(x)) {
            r.push(d.clone());
        }
    }
    r
}

/// The innermost root `p` lies strictly below (paths compared as bytes: `pathkey`; the
/// longest such root is the innermost).
fn root_of<'a>(roots: &'a [PathBuf], p: &Path) -> Option<&'a PathBuf> {
    roots
        .iter()
        .filter(|r| crate::pathkey::rel(p, r).is_some_and(|rest| !rest.as_os_str().is_empty()))
        .max_by_key(|r| crate::pathkey::clean(r).len())
}

/// The profile's protected paths in this project and its git dirs, split into those
/// bound read-only (each where it really is, inside a root), the directories pinned
/// above them, and those watched (absent, or a link).
pub(super) fn protection(input: &PlanInput, project: &Path, git: Option<&GitLayout>) -> Protection {
    let facts: &Facts = input.facts;
    let roots = roots(project, git);
    let mut out = Protection::default();
    for p in candidates(input.profile, project, git, &facts.host.top_names) {
        // What the config names outside the project and its git dirs is read-only (the
        // host) or the session's own (the home layer).
        if root_of(&roots, &p).is_none() {
            continue;
        }
        let fact = facts.get(&p);
        let real_inside = root_of(&roots, &fact.real).is_some();
        if fact.real == p && fact.kind.is_some() {
            out.protected.push(p);
            continue;
        }
        if fact.real != p && real_inside {
            // A link to a place inside the project: that place is what is protected
            // (or watched), the link itself watched.
            if fact.kind.is_some() {
                out.protected.push(fact.real.clone());
            } else {
                out.watched.push(Watched {
                    path: fact.real.clone(),
                    link: None,
                });
            }
        }
        out.watched.push(Watched {
            link: facts.link(&p).map(Path::to_path_buf),
            path: p,
        });
    }
    // A path under another protected one is read-only already.
    out.protected.sort();
    out.protected.dedup();
    let protected = out.protected.clone();
    out.protected.retain(|p| {
        !protected
            .iter()
            .any(|q| p != q && crate::pathkey::under(p, q))
    });
    out.watched.sort_by(|a, b| a.path.cmp(&b.path));
    out.watched.dedup_by(|a, b| a.path == b.path);
    out.watched
        .retain(|w| !protected.iter().any(|q| crate::pathkey::under(&w.path, q)));
    out.pinned = pinned(facts, &roots, &out);
    out.patterns = list(input.profile)
        .into_iter()
        .filter(|r| r.contains('*'))
        .map(String::from)
        .collect();
    let common = common(project, git);
    // The entries there at the start: the first name of each git dir below (`libs` of a
    // submodule `libs/x`).
    let names = |dirs: &[PathBuf], below: &Path| -> Vec<String> {
        let mut v: Vec<String> = dirs
            .iter()
            .filter_map(|d| {
                d.strip_prefix(below)
                    .ok()?
                    .iter()
                    .next()?
                    .to_str()
                    .map(String::from)
            })
            .collect();
        v.dedup();
        v
    };
    let (worktrees, modules) = git
        .map(|g| {
            (
                names(&g.worktrees, &common.join("worktrees")),
                names(&g.modules, &common.join("modules")),
            )
        })
        .unwrap_or_default();
    for (sub, known, files) in [
        ("worktrees", worktrees, WORKTREE_FILES),
        ("modules", modules, MODULE_FILES),
    ] {
        out.watched_dirs.push(WatchedDir {
            dir: common.join(sub),
            known,
            names: files.iter().map(|s| s.to_string()).collect(),
        });
    }
    out
}

/// The directories between a root and each protected or watched path that exist as
/// themselves (no link on the way), shallowest first; not the roots (bound already) nor
/// what lies in a protected path (read-only already).
fn pinned(facts: &Facts, roots: &[PathBuf], p: &Protection) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let paths = p.protected.iter().chain(p.watched.iter().map(|w| &w.path));
    let protected: crate::pathkey::PathSet = p.protected.iter().cloned().collect();
    let mut seen = crate::pathkey::PathSet::default();
    for path in paths {
        let Some(root) = root_of(roots, path) else {
            continue;
        };
        // A protected path's real location is canonical: its parents are dirs.
        let is_protected = protected.contains(path);
        for a in path.ancestors().skip(1) {
            if a == root.as_path() || !crate::pathkey::under(a, root) {
                break;
            }
            let f = facts.get(a);
            let is_dir = is_protected || f.kind == Some(NodeKind::Dir);
            if is_dir && (f.real == a || is_protected) && seen.insert(a.to_path_buf()) {
                out.push(a.to_path_buf());
            }
        }
    }
    out.retain(|d| !p.protected.iter().any(|q| crate::pathkey::under(d, q)));
    out.sort_by_key(|d| (d.components().count(), d.clone()));
    out
}

/// The paths [`protection`] asks facts about, for `resolve`: each candidate and every
/// directory between it and its root.
pub(super) fn wanted(
    cwd: &Path,
    prof: &crate::profile::Profile,
    git: Option<&GitLayout>,
    top_names: &[PathBuf],
) -> Vec<PathBuf> {
    let top = git
        .map(|g| g.top.clone())
        .unwrap_or_else(|| cwd.to_path_buf());
    let mut out = Vec::new();
    for base in [top.as_path(), cwd] {
        let g = git.filter(|g| g.top == base);
        let roots = roots(base, g);
        for c in candidates(prof, base, g, top_names) {
            if let Some(root) = root_of(&roots, &c) {
                out.extend(
                    c.ancestors()
                        .skip(1)
                        .take_while(|a| a != root)
                        .map(Path::to_path_buf),
                );
            }
            out.push(c);
        }
    }
    if let Some(g) = git {
        out.push(g.top.clone());
        out.push(g.common.clone());
        out.push(g.gitdir.clone());
    }
    out
}
