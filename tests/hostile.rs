//! Hostile models: every file of the corpus that `tests/hostile/make_corpus.py`
//! writes must be refused with a clean, one-line error naming the problem
//! (`tests/hostile/expected.txt` says which words), by the library
//! (`nnc_onnx::load_model`, `nnc::prepare_file`) and by the `nnc` CLI (exit
//! code 1) -- never a panic, a crash or a hang. A few valid-but-odd models
//! in the corpus must instead compile, load and run.
//!
//! Needs a Python with `onnx` (`$PY`, `.venv/bin/python` or `python3`);
//! without one the tests say so and pass. The CLI half uses
//! `target/<profile>/nnc` (or `$NNC_BIN`) when it exists: `cargo test
//! --workspace` builds it, `cargo test -p nnc-tests` does not.

use nnc_tests::{
    check_one_line, guarded, nnc_cli, python_with, root, run_with_timeout, skip, Guarded, TempDir,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// Refused, with this substring in the message.
    Err(String),
    /// Compiles.
    Ok,
    /// Either, as long as it is clean.
    Any,
    /// A known bug: what should happen once it is fixed.
    Bug(Box<Expect>),
}

fn parse_expect(want: &str) -> Expect {
    match want {
        "<ok>" => Expect::Ok,
        "<any>" => Expect::Any,
        w => match w.strip_prefix("<bug>") {
            Some(fixed) => Expect::Bug(Box::new(parse_expect(fixed))),
            None => Expect::Err(w.to_string()),
        },
    }
}

#[derive(Clone, Debug)]
struct Case {
    file: String,
    expect: Expect,
}

fn expectations() -> Vec<Case> {
    let text = std::fs::read_to_string(root().join("tests/hostile/expected.txt"))
        .expect("read expected.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (file, want) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("expected.txt: no tab in {l:?}"));
            Case {
                file: file.to_string(),
                expect: parse_expect(want),
            }
        })
        .collect()
}

/// Generates the corpus; `None` (after saying why) without Python/onnx.
fn corpus(test: &str) -> Option<(TempDir, Vec<Case>)> {
    let Some(py) = python_with(&["onnx", "numpy"]) else {
        skip(
            test,
            "no Python with onnx+numpy (set PY, or run scripts/python-env.sh)",
        );
        return None;
    };
    let dir = TempDir::new("hostile");
    let out = Command::new(&py)
        .arg(root().join("tests/hostile/make_corpus.py"))
        .arg(dir.path())
        .output()
        .expect("run make_corpus.py");
    assert!(
        out.status.success(),
        "make_corpus.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(dir.join("INDEX")).expect("corpus INDEX");
    let files: Vec<&str> = index.lines().filter(|l| !l.is_empty()).collect();
    let cases = expectations();
    let missing: Vec<&&str> = files
        .iter()
        .filter(|f| !cases.iter().any(|c| c.file == **f))
        .collect();
    assert!(
        missing.is_empty(),
        "corpus files without a line in expected.txt: {missing:?}"
    );
    let stale: Vec<&str> = cases
        .iter()
        .map(|c| c.file.as_str())
        .filter(|f| !files.contains(f))
        .collect();
    assert!(
        stale.is_empty(),
        "expected.txt names files the corpus lacks: {stale:?}"
    );
    Some((dir, cases))
}

/// The library's verdict on one file: load_model, then prepare_file; for
/// models that prepare, also a full compile, load and run on zeros.
fn check_library(dir: &Path, case: &Case) -> Result<String, String> {
    let expect = match &case.expect {
        Expect::Bug(fixed) => (**fixed).clone(),
        e => e.clone(),
    };
    let path = dir.join(&case.file);
    let out_dir = dir.join(format!("lib-out-{}", case.file.replace('/', "_")));
    let compile = matches!(expect, Expect::Ok | Expect::Any);
    let r = guarded(LIMIT, move || {
        let loaded = nnc_onnx::load_model(&path, &nnc_onnx::Options::default()).map(|_| ());
        let prepared = nnc::prepare_file(&path, &nnc::Options::default());
        let prepared_ok = prepared.is_ok();
        let prepared = prepared.map(|_| ()).map_err(|e| e.to_string());
        let mut ran = None;
        if prepared_ok && compile {
            std::fs::create_dir_all(&out_dir).unwrap();
            let so = out_dir.join("m.so");
            ran = Some(
                nnc::compile_file(&path, &so, None, false, &nnc::Options::default())
                    .map_err(|e| format!("compile: {e}"))
                    .and_then(|_| nnc_runtime::Model::load(&so).map_err(|e| format!("load: {e}")))
                    .and_then(|m| {
                        let zeros = m
                            .info()
                            .inputs
                            .iter()
                            .map(|t| t.zeros())
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| format!("inputs: {e}"))?;
                        m.run(&zeros).map(|_| ()).map_err(|e| format!("run: {e}"))
                    }),
            );
        }
        (loaded.map_err(|e| e.to_string()), prepared, ran)
    });
    let (loaded, prepared, ran) = match r {
        Guarded::Done(v) => v,
        Guarded::Panicked(m) => return Err(format!("panicked: {m}")),
        Guarded::TimedOut => return Err(format!("took more than {LIMIT:?}")),
    };
    let want = match &expect {
        Expect::Err(w) => w,
        Expect::Bug(_) => unreachable!("bugs are unwrapped above"),
        Expect::Ok => {
            prepared.map_err(|e| format!("should compile, but: {e}"))?;
            return match ran {
                Some(Ok(())) => Ok("compiled, loaded and ran".into()),
                Some(Err(e)) => Err(e),
                None => unreachable!(),
            };
        }
        Expect::Any => {
            if let Err(e) = &prepared {
                check_one_line(e)?;
                return Ok(format!("refused: {e}"));
            }
            return match ran {
                Some(Ok(())) => Ok("accepted; compiled, loaded and ran".into()),
                Some(Err(e)) => Err(e),
                None => unreachable!(),
            };
        }
    };
    // The frontend may accept what the middle end refuses, but not the
    // other way round; whichever refuses must say what is wrong.
    if let Err(e) = &loaded {
        check_one_line(e).map_err(|m| format!("load_model: {m}"))?;
        if !e.contains(want.as_str()) {
            return Err(format!("load_model error lacks {want:?}: {e}"));
        }
    }
    let e = match prepared {
        Ok(()) => return Err("prepare_file accepted the model".into()),
        Err(e) => e,
    };
    check_one_line(&e).map_err(|m| format!("prepare_file: {m}"))?;
    if !e.contains(want.as_str()) {
        return Err(format!("prepare_file error lacks {want:?}: {e}"));
    }
    Ok(format!("refused: {e}"))
}

/// The CLI's verdict: `nnc compile FILE -o OUT.so`.
fn check_cli(nnc: &Path, dir: &Path, case: &Case) -> Result<(), String> {
    let expect = match &case.expect {
        Expect::Bug(fixed) => (**fixed).clone(),
        e => e.clone(),
    };
    let out = dir.join(format!("cli-{}.so", case.file.replace('/', "_")));
    let r = run_with_timeout(
        Command::new(nnc)
            .arg("compile")
            .arg(dir.join(&case.file))
            .arg("-o")
            .arg(&out),
        LIMIT,
    )
    .map_err(|e| format!("cannot run {}: {e}", nnc.display()))?
    .ok_or_else(|| format!("nnc compile took more than {LIMIT:?}"))?;
    let stderr = r.stderr.trim_end_matches('\n');
    if stderr.contains("panicked") {
        return Err(format!("nnc panicked: {stderr}"));
    }
    let code = r.status.code();
    match (&expect, code) {
        (Expect::Ok, Some(0)) => Ok(()),
        (Expect::Any, Some(0)) => Ok(()),
        (Expect::Ok, _) => Err(format!("should compile; {}: {stderr}", r.status)),
        (_, Some(1)) => {
            let msg = stderr
                .strip_prefix("nnc: error: ")
                .ok_or_else(|| format!("message does not start with 'nnc: error: ': {stderr:?}"))?;
            check_one_line(msg)?;
            match &expect {
                Expect::Err(w) if !msg.contains(w.as_str()) => {
                    Err(format!("message lacks {w:?}: {msg}"))
                }
                _ => Ok(()),
            }
        }
        _ => Err(format!("{} (expected exit code 1): {stderr}", r.status)),
    }
}

/// Checks the selected cases; returns the failures.
fn run_cases(dir: &Path, cases: &[Case], nnc: Option<&Path>) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        match check_library(dir, case) {
            Ok(summary) => eprintln!("  ok   {:<40} {summary}", case.file),
            Err(e) => {
                eprintln!("  FAIL {:<40} {e}", case.file);
                failures.push(format!("{} (library): {e}", case.file));
            }
        }
        if let Some(nnc) = nnc {
            if let Err(e) = check_cli(nnc, dir, case) {
                eprintln!("  FAIL {:<40} CLI: {e}", case.file);
                failures.push(format!("{} (CLI): {e}", case.file));
            }
        }
    }
    failures
}

fn cli() -> Option<PathBuf> {
    let nnc = nnc_cli();
    match &nnc {
        Some(p) => eprintln!("CLI: {}", p.display()),
        None => eprintln!(
            "CLI: no target/<profile>/nnc (build it, or set NNC_BIN); library checks only"
        ),
    }
    nnc
}

#[test]
fn hostile_models_are_refused_cleanly() {
    let Some((dir, cases)) = corpus("hostile_models_are_refused_cleanly") else {
        return;
    };
    let nnc = cli();
    let active: Vec<Case> = cases
        .iter()
        .filter(|c| !matches!(c.expect, Expect::Bug(_)))
        .cloned()
        .collect();
    let refused = active
        .iter()
        .filter(|c| matches!(c.expect, Expect::Err(_)))
        .count();
    let failures = run_cases(dir.path(), &active, nnc.as_deref());
    eprintln!(
        "{} corpus files: {refused} must be refused, {} must compile or may ({} known bugs skipped)",
        cases.len(),
        active.len() - refused,
        cases.len() - active.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The `<bug>` lines of expected.txt, expecting what they will give once
/// fixed. A new corpus bug gets a `<bug>` line (so the main test skips it)
/// and is described in the report; this test then fails until it is fixed.
#[test]
#[ignore = "runs the known-bug (<bug>) lines of tests/hostile/expected.txt; none at the moment"]
fn known_corpus_bugs() {
    let Some((dir, cases)) = corpus("known_corpus_bugs") else {
        return;
    };
    let nnc = cli();
    let bugs: Vec<Case> = cases
        .into_iter()
        .filter(|c| matches!(c.expect, Expect::Bug(_)))
        .collect();
    eprintln!("{} known bugs in the corpus", bugs.len());
    let failures = run_cases(dir.path(), &bugs, nnc.as_deref());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
