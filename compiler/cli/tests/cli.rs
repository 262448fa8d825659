//! End-to-end tests of the `nnc` command: exit codes and one-line errors
//! for bad models, and compiled libraries that load and agree with the JIT.

#[path = "../../../frontends/onnx/tests/common/mod.rs"]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn nnc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-cli-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Runs `nnc compile` on `bytes` and returns (exit code, stderr).
fn compile_bytes(name: &str, bytes: &[u8], extra: &[&str]) -> (i32, String) {
    let model = tmp(&format!("{name}.onnx"));
    std::fs::write(&model, bytes).unwrap();
    let out = tmp(&format!("{name}.so"));
    let o = nnc()
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn relu_model(opset: i64) -> M {
    M::new(opset)
        .input_f32("x", &[2, 3])
        .output("y")
        .node("r0", "Relu", &["x"], &["y"], vec![])
}

#[test]
fn unsupported_ops_are_all_listed_by_node() {
    let m = M::new(17)
        .input_f32("x", &[2, 3])
        .output("z")
        .node("weird_1", "FancyOp", &["x"], &["y"], vec![])
        .node("weird_2", "OtherOp", &["y"], &["z"], vec![]);
    let (code, err) = compile_bytes("unsupported", &m.bytes(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FancyOp") && err.contains("weird_1"), "{err}");
    assert!(err.contains("OtherOp") && err.contains("weird_2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_attribute_names_node() {
    let m = M::new(17)
        .input_f32("x", &[1, 2, 5, 5])
        .output("y")
        .init(tf32("w", &[2, 2, 3, 3], &[0.5; 36]))
        .node(
            "conv_bad",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![ai("group", 0)],
        );
    let (code, err) = compile_bytes("badattr", &m.bytes(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("conv_bad") && err.contains("group"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn truncated_file_is_refused() {
    let bytes = std::fs::read(root().join("examples/mnist_cnn.onnx")).unwrap();
    let (code, err) = compile_bytes("truncated", &bytes[..bytes.len() / 3], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("truncated") || err.contains("invalid"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn missing_symbolic_dim_names_the_flag() {
    let (code, err) = compile_bytes(
        "symbolic",
        &std::fs::read(root().join("examples/attention.onnx")).unwrap(),
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--input-shape") && err.contains("[L]"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn opset_too_new_is_refused() {
    let (code, err) = compile_bytes("opset", &relu_model(99).bytes(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("99"), "{err}");
}

#[test]
fn bad_command_line_exits_2() {
    let o = nnc().args(["compile", "--no-such-flag"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = nnc()
        .args(["compile", "m.onnx", "--input-shape", "x=1,a"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn library_matches_jit_bit_for_bit() {
    let model = root().join("examples/mnist_cnn.onnx");
    let out = tmp("mnist_jit_vs_aot.so");
    let o = nnc()
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.with_extension("h").exists());
    let lib = nnc::Model::load(&out).unwrap();
    let jit = nnc::jit::compile_file(&model, &nnc::Options::default()).unwrap();
    let x: Vec<f32> = (0..784)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let input = nnc::Tensor::from_f32(&[1, 1, 28, 28], x).unwrap();
    let a = lib.run(std::slice::from_ref(&input)).unwrap();
    let b = jit.run(std::slice::from_ref(&input)).unwrap();
    assert_eq!(a[0].as_f32().unwrap(), b[0].as_f32().unwrap());
    let p = a[0].as_f32().unwrap();
    assert!(
        (p.iter().sum::<f32>() - 1.0).abs() < 1e-5,
        "softmax output sums to 1"
    );
}

#[test]
fn header_is_valid_c_alongside_nnc_h() {
    let out = tmp("hdr_model.so");
    let o = nnc()
        .arg("compile")
        .arg(root().join("examples/mnist_cnn.onnx"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let c = tmp("hdr_test.c");
    std::fs::write(
        &c,
        "#include \"nnc.h\"\n#include \"hdr_model.h\"\nint main(void){ const nnc_model_info *i = hdr_model_info(); return i->abi_version == NNC_ABI_VERSION ? 0 : 1; }\n",
    )
    .unwrap();
    let exe = tmp("hdr_test");
    let st = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-pedantic"])
        .arg(format!("-I{}", root().join("runtime/include").display()))
        .arg(format!("-I{}", out.parent().unwrap().display()))
        .arg(&c)
        .arg(&out)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-Wl,-rpath,{}", out.parent().unwrap().display()))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(Command::new(&exe).status().unwrap().success());
}

#[test]
fn run_writes_npy_outputs() {
    let dir = tmp("run_out");
    let o = nnc()
        .arg("run")
        .arg(root().join("examples/mnist_cnn.onnx"))
        .arg("--output-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("top-5"), "{s}");
    assert!(dir.join("probs.npy").exists());
}

/// Every bundled example and every generated model-test model (when
/// `tests/models/make_models.py` has filled `.cache/models`, as
/// scripts/test.sh does first): the JIT and the .so give bit-identical
/// outputs on the same random inputs.
#[test]
fn jit_and_library_agree_on_every_model() {
    type Shapes = Vec<(String, Vec<usize>)>;
    let mut models: Vec<(PathBuf, Shapes)> = vec![
        (root().join("examples/mnist_cnn.onnx"), vec![]),
        (
            root().join("examples/attention.onnx"),
            vec![("x".into(), vec![16, 1, 64])],
        ),
    ];
    let cache = root().join(".cache/models");
    if let Ok(rd) = std::fs::read_dir(&cache) {
        let mut extra: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        extra.sort();
        models.extend(extra.into_iter().map(|p| (p, vec![])));
    } else {
        eprintln!(
            "note: {} is absent; checking the bundled examples only",
            cache.display()
        );
    }
    for (model, shapes) in models {
        let opts = nnc::Options {
            input_shapes: shapes,
            ..Default::default()
        };
        let out = tmp(&format!(
            "agree_{}.so",
            model.file_stem().unwrap().to_string_lossy()
        ));
        nnc::compile_file(&model, &out, None, false, &opts).unwrap();
        let lib = nnc::Model::load(&out).unwrap();
        let jit = nnc::jit::compile_file(&model, &opts).unwrap();
        let mut seed = 0x1234_5678_u64;
        let inputs: Vec<nnc::Tensor> = lib
            .info()
            .inputs
            .iter()
            .map(|ti| {
                let data: Vec<f32> = (0..ti.numel())
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                    })
                    .collect();
                nnc::Tensor::from_f32(&ti.shape, data).unwrap()
            })
            .collect();
        let a = lib.run(&inputs).unwrap();
        let b = jit.run(&inputs).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.as_f32().unwrap(), y.as_f32().unwrap());
            assert!(
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{}: JIT and .so differ",
                model.display()
            );
        }
        eprintln!("{}: JIT == .so ({} outputs)", model.display(), a.len());
    }
}
