//! The shape of the code, checked: no function in src/ longer than 120 lines, no file
//! longer than 700, and no import cycle between modules (no module uses, directly or
//! through others, a module that uses it back). Modules are files; an edge is a `use` or
//! an inline path naming `crate::…`, `super::…` or `self::…` that resolves to another
//! file's module. A `mod x;` declaration is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 120;
const MAX_FILE_LINES: usize = 700;

fn sources() -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// The source with comments, string and char literals blanked (kept as spaces so that
/// line numbers and brace structure stay), so braces and paths can be counted.
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied().unwrap_or('\0');
        if c == '/' && next == '/' {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == '*' {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == '"' || next == '#')
            && !b
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // raw string r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let close = if next == '\\' {
                (i + 2..b.len().min(i + 12)).find(|&k| b[k] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(k) => {
                    out.push_str(&" ".repeat(k + 1 - i));
                    i = k + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// (name, first line, line count) of every `fn` with a body.
fn functions(stripped: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = stripped.lines().collect();
    let text: Vec<char> = stripped.chars().collect();
    let mut line_of = Vec::with_capacity(text.len());
    let mut l = 1;
    for ch in &text {
        line_of.push(l);
        if *ch == '\n' {
            l += 1;
        }
    }
    let mut out = Vec::new();
    let s: String = text.iter().collect();
    let mut search = 0;
    while let Some(pos) = s[search..].find("fn ") {
        let at = search + pos;
        search = at + 3;
        let before = s[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = s[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body starts at the first '{' before any ';' (a declaration has none).
        let rest = &s[at..];
        let (Some(brace), semi) = (rest.find('{'), rest.find(';')) else {
            continue;
        };
        if semi.is_some_and(|x| x < brace) {
            continue;
        }
        let start = at + brace;
        let mut depth = 0usize;
        let mut end = start;
        for (k, ch) in s[start..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let first = line_of[at];
        let last = line_of[end.min(line_of.len() - 1)];
        out.push((name, first, last - first + 1));
    }
    let _ = lines;
    out
}

#[test]
fn no_function_is_longer_than_120_lines_and_no_file_longer_than_700() {
    let mut bad = Vec::new();
    for f in sources() {
        let src = std::fs::read_to_string(&f).unwrap();
        let rel = f
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        let n = src.lines().count();
        if n > MAX_FILE_LINES {
            bad.push(format!("{rel}: {n} lines (at most {MAX_FILE_LINES})"));
        }
        for (name, line, len) in functions(&strip(&src)) {
            if len > MAX_FN_LINES {
                bad.push(format!(
                    "{rel}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "too long:\n{}", bad.join("\n"));
}

/// `src/a/b.rs` → ["a","b"], `src/a/mod.rs` → ["a"], `src/lib.rs` → [].
fn module_of(f: &Path) -> Vec<String> {
    let rel = f
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// Every path in the stripped source that starts at `crate::`, `super::`, `self::` or a
/// child module of `here` (`child::x`), resolved to absolute segments (use-trees
/// `{x, y}` are expanded one level).
fn paths_in(stripped: &str, here: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let s = stripped;
    let bytes = s.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < s.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < s.len() && (ident(bytes[j]) || bytes[j] == b':') {
            j += 1;
        }
        let path = &s[i..j];
        let mut segs: Vec<String> = path
            .split("::")
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect();
        let head = segs[0].clone();
        // `pub(super)` and `pub(crate)` name no module to import.
        let relative = path.contains("::")
            && (matches!(head.as_str(), "crate" | "super" | "self") || children.contains(&head));
        if !relative {
            i = j;
            continue;
        }
        let mut base: Vec<String> = here.to_vec();
        match head.as_str() {
            "crate" => {
                base.clear();
                segs.remove(0);
            }
            "super" => {
                segs.remove(0);
                base.pop();
                while segs.first().is_some_and(|x| x == "super") {
                    segs.remove(0);
                    base.pop();
                }
            }
            "self" => {
                segs.remove(0);
            }
            _ => {}
        }
        let mut full = base.clone();
        full.extend(segs.iter().cloned());
        // `use x::{a, b::c}`: the names after the brace.
        if j < s.len() && bytes[j] == b'{' {
            let close = s[j..].find('}').map(|k| j + k).unwrap_or(s.len());
            for item in s[j + 1..close].split(',') {
                let item = item.trim();
                let mut p = full.clone();
                p.extend(
                    item.split("::")
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty() && x != "self" && x != "*"),
                );
                out.push(p);
            }
        }
        out.push(full);
        i = j;
    }
    out
}

/// The source without its `#[cfg(test)] mod tests { … }` block: test code may use its
/// parent freely, and `super` there means the file's own module.
fn without_tests(stripped: &str) -> String {
    let Some(at) = stripped.find("#[cfg(test)]") else {
        return stripped.to_string();
    };
    let rest = &stripped[at..];
    let Some(m) = rest.find("mod ") else {
        return stripped.to_string();
    };
    let Some(open) = rest[m..].find(['{', ';']).map(|k| m + k) else {
        return stripped.to_string();
    };
    if rest.as_bytes()[open] == b';' {
        return format!("{}{}", &stripped[..at], &rest[open + 1..]);
    }
    let mut depth = 0;
    for (k, ch) in rest[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let end = at + open + k + 1;
                    return format!("{}{}", &stripped[..at], without_tests(&stripped[end..]));
                }
            }
            _ => {}
        }
    }
    stripped.to_string()
}

#[test]
fn the_module_import_graph_has_no_cycle() {
    let files = sources();
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let here = module_of(f);
        let src = without_tests(&strip(&std::fs::read_to_string(f).unwrap()));
        let children: BTreeSet<String> = modules
            .keys()
            .filter(|m| m.len() == here.len() + 1 && m.starts_with(&here))
            .map(|m| m[here.len()].clone())
            .collect();
        for p in paths_in(&src, &here, &children) {
            // The longest prefix that is a module file.
            let target = (1..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|m| modules.contains_key(m));
            if let Some(t) = target {
                if t != here && !t.is_empty() {
                    edges.entry(here.clone()).or_default().insert(t);
                }
            }
        }
    }
    // Tarjan-free: a DFS that reports the first cycle it finds, with its path.
    fn dfs(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(pos) = stack.iter().position(|x| x == n) {
            let mut c: Vec<String> = stack[pos..].iter().map(|m| m.join("::")).collect();
            c.push(n.join("::"));
            cycles.push(c.join(" -> "));
            return;
        }
        if done.contains(n) {
            return;
        }
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            dfs(m, edges, stack, done, cycles);
        }
        stack.pop();
        done.insert(n.clone());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for n in modules.keys() {
        dfs(n, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checks_above_can_fail() {
    let f = functions(&strip(
        "fn a() {\n let s = \"}\";\n if x { y }\n}\nfn b();\n",
    ));
    assert_eq!(f, vec![("a".to_string(), 1, 4)]);
    let here = vec!["x".to_string(), "y".to_string()];
    let kids: BTreeSet<String> = ["k".to_string()].into();
    let p = paths_in(
        &strip("use super::z::{A, w::B};\nuse crate::q;\nk::f();"),
        &here,
        &kids,
    );
    assert!(
        p.contains(&vec!["x".into(), "z".into(), "w".into(), "B".into()]),
        "{p:?}"
    );
    assert!(p.contains(&vec!["q".into()]), "{p:?}");
    assert!(
        p.contains(&vec!["x".into(), "y".into(), "k".into(), "f".into()]),
        "{p:?}"
    );
    let t = without_tests("a\n#[cfg(test)]\nmod tests {\n use super::*; { }\n}\nb");
    assert_eq!(t, "a\n\nb");
}

/// Every `unsafe { … }` block says why it is sound (`// SAFETY:` on it or just above),
/// and every `unsafe fn` has a `# Safety` section in its doc comment.
#[test]
fn every_unsafe_block_and_fn_documents_its_safety() {
    let mut bad = Vec::new();
    for f in sources().iter().chain(tests_sources().iter()) {
        let src = std::fs::read_to_string(f).unwrap();
        let stripped = strip(&src);
        let lines: Vec<&str> = src.lines().collect();
        let code: Vec<&str> = stripped.lines().collect();
        let rel = f
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        for (i, l) in code.iter().enumerate() {
            if l.contains("unsafe {") || l.contains("unsafe{") {
                let window = &lines[i.saturating_sub(3)..=i];
                if !window.iter().any(|w| w.contains("SAFETY")) {
                    bad.push(format!(
                        "{rel}:{}: unsafe block without a SAFETY comment",
                        i + 1
                    ));
                }
            }
            if l.contains("unsafe fn ") {
                // The doc comment right above the fn (attributes allowed in between).
                let mut k = i;
                let mut doc = String::new();
                while k > 0 {
                    let prev = lines[k - 1].trim_start();
                    if prev.starts_with("///") || prev.starts_with("#[") {
                        doc.push_str(prev);
                        k -= 1;
                    } else {
                        break;
                    }
                }
                if !doc.contains("# Safety") {
                    bad.push(format!(
                        "{rel}:{}: unsafe fn without a # Safety section",
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn tests_sources() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    out.push(dir.join("common/mod.rs"));
    out
}
