//! Where each fuzz target's inputs come from: `fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/` and the repository fixtures listed for it in
//! `fuzz/fixtures.txt`. Standard library only: `cargo xtask fuzz` (seeding the corpus) and
//! `tests/tests/fuzz_replay.rs` (replaying on stable) both compile this file with `#[path]`.

use std::path::{Path, PathBuf};

/// The fuzz targets: the file stems of `fuzz/fuzz_targets/*.rs`, sorted.
pub fn targets(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("fuzz/fuzz_targets"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The input files of `target` under the repository `root`, sorted (`.gitkeep` excluded).
pub fn input_files(root: &Path, target: &str) -> std::io::Result<Vec<PathBuf>> {
    let listed = std::fs::read_to_string(root.join("fuzz/fixtures.txt"))?;
    let mut dirs = vec![
        root.join("fuzz/seeds").join(target),
        root.join("fuzz/regressions").join(target),
    ];
    dirs.extend(
        listed
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter(|(t, _)| *t == target)
            .map(|(_, dir)| root.join(dir.trim())),
    );
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
