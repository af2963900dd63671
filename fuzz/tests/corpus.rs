//! Replays every checked-in input of every fuzz target on stable (`cd fuzz && cargo test`,
//! part of `make test`). A failing input is named; replay it alone with
//! `cargo run --bin <target> -- corpus/<target>/<file>`.

use std::path::{Path, PathBuf};

// Counts the bytes each thread holds: `responses_v3` bounds what endless bodies leave held.

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let run = microlock_fuzz::target(target);
    let files = inputs(target);
    assert!(!files.is_empty(), "corpus/{target}/ is empty");
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("readable input");
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(file.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of `{target}` fail: {failed:?}",
        failed.len(),
        files.len()
    );
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn responses_corpus() {
    replay("responses");
}

#[test]
fn operations_corpus() {
    replay("operations");
}

#[test]
fn races_corpus() {
    replay("races");
}

#[test]
fn responses_v3_corpus() {
    replay("responses_v3");
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let targets: Vec<&str> = microlock_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut sorted = targets.clone();
    sorted.sort();
    assert_eq!(
        dirs, sorted,
        "corpus/ directories vs. microlock_fuzz::TARGETS"
    );
    let source = include_str!("corpus.rs");
    for t in targets {
        assert!(
            source.contains(&format!("replay(\"{t}\")")),
            "tests/corpus.rs does not replay `{t}`"
        );
    }
}

/// Writes the seeds made from the recorded fixtures and the hostile catalogue into
/// `corpus/responses/` (`cargo test -- --ignored write_response_seeds`); minimise afterwards.
#[test]
#[ignore]
fn write_response_seeds() {
    let dir = corpus_dir().join("responses");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in microlock_fuzz::responses::seeds() {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// Writes the v3 seed scripts into `corpus/responses_v3/`
/// (`cargo test -- --ignored write_response_v3_seeds`).
#[test]
#[ignore]
fn write_response_v3_seeds() {
    let dir = corpus_dir().join("responses_v3");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in microlock_fuzz::responses_v3::seeds() {
        std::fs::write(dir.join(name), data).unwrap();
    }
}
