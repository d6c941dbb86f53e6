//! `cargo xtask layout`: how the code is laid out, measured from its own imports — per crate
//! the files and lines under `src/`, its share of the workspace, and the import circles
//! between its files (a circle is a set of files each of which reaches every other by
//! following `use crate::…` / `super::…` imports). The figures #21 was judged by, and the
//! check that keeps them: `--check` fails on any circle or on a crate above `--max-share`.
//!
//! How it reads a file: the module path comes from the file path (`src/a/b.rs` and
//! `src/a/b/mod.rs` are `crate::a::b`); every `crate::x::y` and `super::x` path outside
//! comments and outside the file's `#[cfg(test)]` tail names the deepest module file it
//! reaches. Macros and re-exports are not followed; the measure is the same every time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::fail;
use crate::util::{repo_root, Result};

#[derive(clap::Args)]
pub struct LayoutArgs {
    /// Fail when a crate has an import circle or holds more than `--max-share` of the lines.
    #[arg(long)]
    pub check: bool,
    /// Largest share of the workspace's lines one crate may hold, in percent (with --check).
    #[arg(long, default_value_t = 30.0)]
    pub max_share: f64,
    /// Measure another checkout (e.g. a `git worktree` of an older commit, for before/after).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// One crate's figures.
#[derive(Debug)]
struct CrateLayout {
    name: String,
    files: usize,
    lines: usize,
    circles: Vec<Vec<String>>,
}

pub fn run(args: &LayoutArgs) -> Result {
    let root = args.root.clone().unwrap_or_else(repo_root);
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(|e| fail!("read {}: {e}", root.display()))? {
        let dir = entry?.path();
        let src = dir.join("src");
        if dir.join("Cargo.toml").is_file() && src.is_dir() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            crates.push(measure(&name, &src)?);
        }
    }
    crates.sort_by_key(|c| std::cmp::Reverse(c.lines));
    let total: usize = crates.iter().map(|c| c.lines).sum();
    println!("| crate | files | lines | share | import circles |");
    println!("|---|---|---|---|---|");
    let mut problems = Vec::new();
    for c in &crates {
        let share = c.lines as f64 * 100.0 / total.max(1) as f64;
        let circles = if c.circles.is_empty() {
            "0".to_string()
        } else {
            c.circles
                .iter()
                .map(|files| files.join(" ↔ "))
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "| {} | {} | {} | {share:.1}% | {circles} |",
            c.name, c.files, c.lines
        );
        if !c.circles.is_empty() {
            problems.push(format!("{}: {} import circle(s)", c.name, c.circles.len()));
        }
        if share > args.max_share {
            problems.push(format!(
                "{}: {share:.1}% of the lines (at most {}%)",
                c.name, args.max_share
            ));
        }
    }
    println!(
        "| total | {} | {total} | | |",
        crates.iter().map(|c| c.files).sum::<usize>()
    );
    if args.check && !problems.is_empty() {
        return Err(fail!("layout: {}", problems.join("; ")));
    }
    Ok(())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result {
    for entry in std::fs::read_dir(dir).map_err(|e| fail!("read {}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `src/a/b.rs`, `src/a/b/mod.rs` → `["a", "b"]`; `src/lib.rs`, `src/main.rs` → `[]`.
/// Files under `src/bin/` are crates of their own and are left out.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    Some(parts)
}

/// The text that counts as code: no comments, no `#[cfg(test)]` tail.
fn code_of(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or(text);
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that follows `prefix` in `code` (`crate::a::b::{c, d}` gives `a::b`).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, `xsuper::`
        }
        let rest = &code[i + prefix.len()..];
        let mut parts = Vec::new();
        for seg in rest.split("::") {
            let word: &str = seg
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("");
            if word.is_empty() || word != seg {
                if !word.is_empty() {
                    parts.push(word);
                }
                break;
            }
            parts.push(word);
        }
        out.push(parts);
    }
    out
}

fn measure(name: &str, src: &Path) -> Result<CrateLayout> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    files.sort();
    let mut lines = 0;
    let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut texts = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| fail!("read {}: {e}", f.display()))?;
        lines += text.lines().count();
        if let Some(m) = module_of(src, f) {
            let label = f
                .strip_prefix(src)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            modules.insert(m.clone(), label.clone());
            texts.push((m, label, text));
        }
    }
    // The deepest module file a path reaches.
    let resolve = |path: &[String]| -> Option<String> {
        (0..=path.len())
            .rev()
            .find_map(|n| modules.get(&path[..n]).cloned())
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, label, text) in &texts {
        let code = code_of(text);
        let is_dir_module = label.ends_with("mod.rs") || label == "lib.rs" || label == "main.rs";
        let mut targets = Vec::new();
        for p in paths_after(&code, "crate::") {
            targets.push(p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        for p in paths_after(&code, "super::") {
            // `super` of crate::a::b is crate::a, whether b is a.rs's child or a/b.rs.
            let mut base = module.clone();
            if !is_dir_module || !base.is_empty() {
                base.pop();
            }
            base.extend(p.iter().map(|s| s.to_string()));
            targets.push(base);
        }
        for t in targets {
            if let Some(to) = resolve(&t).filter(|to| to != label) {
                edges.entry(label.clone()).or_default().insert(to);
            }
        }
    }
    Ok(CrateLayout {
        name: name.to_string(),
        files: files.len(),
        lines,
        circles: circles(&modules.values().cloned().collect::<Vec<_>>(), &edges),
    })
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(nodes: &[String], edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            if let Some(ws) = self.edges.get(v) {
                for w in ws {
                    if !self.index.contains_key(w.as_str()) {
                        self.visit(w);
                        let lw = self.low[w.as_str()];
                        let lv = self.low[v];
                        self.low.insert(v, lv.min(lw));
                    } else if self.on_stack.contains(w.as_str()) {
                        let iw = self.index[w.as_str()];
                        let lv = self.low[v];
                        self.low.insert(v, lv.min(iw));
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !walk.index.contains_key(n.as_str()) {
            walk.visit(n);
        }
    }
    walk.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_to_the_last_module_segment() {
        let code = "use crate::a::b::{C, d};\nfn f() { crate::x::y(); super::z::W }\nmy_crate::q";
        assert_eq!(
            paths_after(code, "crate::"),
            vec![vec!["a", "b"], vec!["x", "y"]]
        );
        assert_eq!(paths_after(code, "super::"), vec![vec!["z", "W"]]);
    }

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        let e = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                m.entry(a.to_string()).or_default().insert(b.to_string());
            }
            m
        };
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert!(circles(&nodes, &e(&[("a", "b"), ("b", "c")])).is_empty());
        assert_eq!(
            circles(&nodes, &e(&[("a", "b"), ("b", "c"), ("c", "a")])),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
    }
}
