//! Checks `include/nnc.h` against the Rust mirrors, and `Model` against a
//! hand-written C "model" library that follows the ABI, independently of
//! the compiler. Needs a C compiler (`$CC` or `cc`); skipped without one.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nnc_runtime::{abi, DType, Error, Model, Tensor, ThreadPool, Workspace};

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn have_cc() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        let ok = Command::new(cc())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("no C compiler found; skipping C ABI tests");
        }
        ok
    })
}

fn out_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Fixed name so runs do not pile up; `compile` renames finished
        // files into place, so concurrent test processes cannot collide.
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nnc-runtime-c-abi");
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// Compiles `src` with `args`, panicking with the compiler's output on error.
fn compile(name: &str, src: &str, args: &[&str]) -> PathBuf {
    let dir = out_dir();
    let pid = std::process::id();
    let c = dir.join(format!("{name}.{pid}.c"));
    let tmp = dir.join(format!("{name}.{pid}.tmp"));
    let out = dir.join(name);
    std::fs::write(&c, src).unwrap();
    let o = Command::new(cc())
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
        .arg(include_dir())
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .arg(&c)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&c);
    assert!(
        o.status.success(),
        "{} failed:\n{}",
        cc(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

#[test]
fn header_matches_rust_layout() {
    if !have_cc() {
        return;
    }
    use std::mem::{offset_of, size_of};
    let src = r#"
#include <stdio.h>
#include <stddef.h>
#include "nnc.h"
#include "nnc.h" /* include guard */
int main(void) {
  printf("%d %zu %zu %zu %zu %zu\n", NNC_ABI_VERSION, sizeof(nnc_tensor_info),
         offsetof(nnc_tensor_info, name), offsetof(nnc_tensor_info, dtype),
         offsetof(nnc_tensor_info, rank), offsetof(nnc_tensor_info, shape));
  printf("%zu %zu %zu %zu %zu %zu %zu %zu %zu\n", sizeof(nnc_model_info),
         offsetof(nnc_model_info, abi_version), offsetof(nnc_model_info, num_inputs),
         offsetof(nnc_model_info, num_outputs), offsetof(nnc_model_info, inputs),
         offsetof(nnc_model_info, outputs), offsetof(nnc_model_info, workspace_size),
         offsetof(nnc_model_info, workspace_align), offsetof(nnc_model_info, producer));
  printf("%zu %zu %zu %zu\n", sizeof(nnc_threads), offsetof(nnc_threads, num_threads),
         offsetof(nnc_threads, pool), offsetof(nnc_threads, parallel_for));
  return 0;
}
"#;
    let exe = compile("layout", src, &["-pedantic"]);
    let out = Command::new(&exe).output().unwrap();
    let got = String::from_utf8(out.stdout).unwrap();
    let want = format!(
        "{} {} {} {} {} {}\n{} {} {} {} {} {} {} {} {}\n{} {} {} {}\n",
        abi::NNC_ABI_VERSION,
        size_of::<abi::nnc_tensor_info>(),
        offset_of!(abi::nnc_tensor_info, name),
        offset_of!(abi::nnc_tensor_info, dtype),
        offset_of!(abi::nnc_tensor_info, rank),
        offset_of!(abi::nnc_tensor_info, shape),
        size_of::<abi::nnc_model_info>(),
        offset_of!(abi::nnc_model_info, abi_version),
        offset_of!(abi::nnc_model_info, num_inputs),
        offset_of!(abi::nnc_model_info, num_outputs),
        offset_of!(abi::nnc_model_info, inputs),
        offset_of!(abi::nnc_model_info, outputs),
        offset_of!(abi::nnc_model_info, workspace_size),
        offset_of!(abi::nnc_model_info, workspace_align),
        offset_of!(abi::nnc_model_info, producer),
        size_of::<abi::nnc_threads>(),
        offset_of!(abi::nnc_threads, num_threads),
        offset_of!(abi::nnc_threads, pool),
        offset_of!(abi::nnc_threads, parallel_for),
    );
    assert_eq!(got, want);
}

#[test]
fn header_compiles_as_cpp_and_with_a_model_header() {
    if !have_cc() {
        return;
    }
    // A generated model header carrying its own copy of the types, guarded
    // by NNC_ABI_TYPES_DEFINED, must coexist with nnc.h in either order.
    let header = nnc_runtime::HEADER;
    let start = header.find("#ifndef NNC_ABI_TYPES_DEFINED").unwrap();
    let end = header.find("#endif /* NNC_ABI_TYPES_DEFINED */").unwrap();
    let model_h = format!(
        "#include <stddef.h>\n#include <stdint.h>\n{}#endif\n",
        &header[start..end]
    );
    std::fs::write(out_dir().join("model_types.h"), model_h).unwrap();
    let src = "#include \"model_types.h\"\n#include \"nnc.h\"\nint main(void) { return 0; }\n";
    let dir = out_dir();
    let dir = dir.to_str().unwrap();
    compile("coexist", src, &["-I", dir]);
    let src = "#include \"nnc.h\"\n#include \"model_types.h\"\nint main(void) { return 0; }\n";
    compile("coexist2", src, &["-I", dir]);
    let c = out_dir().join("cpp.cpp");
    std::fs::write(
        &c,
        "#include \"nnc.h\"\nint main() { nnc_threads t = {}; return (int)t.num_threads; }\n",
    )
    .unwrap();
    let o = Command::new(cc())
        .args(["-x", "c++", "-Wall", "-Werror", "-fsyntax-only", "-I"])
        .arg(include_dir())
        .arg(&c)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A stand-in for a generated library: inputs x: f32[4,3] and k: i64[1];
/// outputs y = x * k (one parallel task per row) and pos = x > 0. It checks
/// its workspace alignment, uses the workspace, and fails with code 7 when
/// x[0] is NaN. Built with -DABI_VERSION=... / -DNO_RUN to make bad libraries.
const FAKE_MODEL: &str = r#"
#include <stdlib.h>
#include <string.h>
#include "nnc.h"
#ifndef ABI_VERSION
#define ABI_VERSION NNC_ABI_VERSION
#endif
#define WS_SIZE 256
#define WS_ALIGN 128

static const int64_t x_shape[] = {4, 3};
static const int64_t k_shape[] = {1};
static const nnc_tensor_info inputs[] = {
  {"x", 1, 2, x_shape},
  {"k", 7, 1, k_shape},
};
static const nnc_tensor_info outputs[] = {
  {"y", 1, 2, x_shape},
  {"pos", 9, 2, x_shape},
};
static const nnc_model_info info = {
  ABI_VERSION, 2, 2, inputs, outputs, WS_SIZE, WS_ALIGN, "fake 1.0",
};

const nnc_model_info *fake_info(void) { return &info; }

struct row_ctx { const float *x; float k; float *y; unsigned char *pos; float *ws; };

static void row_task(void *p, size_t r) {
  struct row_ctx *c = p;
  for (size_t j = 0; j < 3; j++) {
    float v = c->x[r * 3 + j];
    c->ws[r * 3 + j] = v * c->k; /* go through scratch to exercise it */
    c->y[r * 3 + j] = c->ws[r * 3 + j];
    c->pos[r * 3 + j] = v > 0.0f;
  }
}

int fake_run(const void *const *in, void *const *out, void *workspace, const nnc_threads *threads) {
  const float *x = in[0];
  if (x[0] != x[0]) return 7;
  void *ws = workspace;
  if (!ws) {
    ws = aligned_alloc(WS_ALIGN, WS_SIZE);
    if (!ws) return 1;
  } else if ((size_t)ws % WS_ALIGN) {
    return 3;
  }
  struct row_ctx c = { x, (float)*(const int64_t *)in[1], out[0], out[1], ws };
  if (threads) {
    if (threads->num_threads < 1) return 4;
    threads->parallel_for(threads->pool, 4, row_task, &c);
  } else {
    for (size_t r = 0; r < 4; r++) row_task(&c, r);
  }
  if (!workspace) free(ws);
  return 0;
}

/* The fixed names collide with the typedef in C: export them via asm labels. */
const nnc_model_info *fixed_info(void) __asm__("nnc_model_info");
const nnc_model_info *fixed_info(void) { return fake_info(); }
#ifndef NO_RUN
int fixed_run(const void *const *, void *const *, void *, const nnc_threads *) __asm__("nnc_model_run");
int fixed_run(const void *const *in, void *const *out, void *ws, const nnc_threads *t) {
  return fake_run(in, out, ws, t);
}
#endif
"#;

fn fake_model(name: &str, defines: &[&str]) -> Option<PathBuf> {
    if !have_cc() {
        return None;
    }
    let mut args = vec!["-shared", "-fPIC", "-std=c11"];
    args.extend_from_slice(defines);
    Some(compile(name, FAKE_MODEL, &args))
}

fn good_model() -> Option<&'static Path> {
    static LIB: OnceLock<Option<PathBuf>> = OnceLock::new();
    LIB.get_or_init(|| fake_model("libfake.so", &[])).as_deref()
}

fn x_input(scale: f32) -> Tensor {
    Tensor::from_f32(&[4, 3], (0..12).map(|i| (i as f32 - 5.5) * scale).collect()).unwrap()
}

fn check_outputs(out: &[Tensor], x: &Tensor, k: i64) {
    let x = x.as_f32().unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].shape(), &[4, 3]);
    let y = out[0].as_f32().unwrap();
    let pos = out[1].to_bools().unwrap();
    for i in 0..12 {
        assert_eq!(y[i], x[i] * k as f32);
        assert_eq!(pos[i], x[i] > 0.0);
    }
}

#[test]
fn loads_and_runs_fake_model() {
    let Some(path) = good_model() else { return };
    let model = Model::load(path).unwrap();
    let info = model.info();
    assert_eq!(info.producer, "fake 1.0");
    assert_eq!(info.workspace_size, 256);
    assert_eq!(info.workspace_align, 128);
    let names: Vec<_> = info.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["x", "k"]);
    assert_eq!(info.inputs[1].dtype, DType::I64);
    assert_eq!(info.outputs[1].dtype, DType::Bool);
    assert_eq!(info.outputs[1].shape, [4, 3]);

    let x = x_input(1.0);
    let k = Tensor::from_i64(&[1], vec![3]).unwrap();
    let out = model.run(&[x.clone(), k.clone()]).unwrap();
    check_outputs(&out, &x, 3);

    // Reused workspace, with and without a pool, and into fixed outputs.
    let pool = ThreadPool::new(3);
    let mut ws = model.new_workspace().unwrap();
    for threads in [None, Some(&pool)] {
        let out = model
            .run_with(&[x.clone(), k.clone()], &mut ws, threads)
            .unwrap();
        check_outputs(&out, &x, 3);
        let mut outs: Vec<Tensor> = info.outputs.iter().map(|o| o.zeros().unwrap()).collect();
        model
            .run_into(&[x.clone(), k.clone()], &mut outs, &mut ws, threads)
            .unwrap();
        check_outputs(&outs, &x, 3);
    }
}

#[test]
fn relative_path_without_slash_loads_from_cwd() {
    let Some(path) = good_model() else { return };
    // Cargo runs integration tests with the package root as cwd; copy the
    // library there under a bare name (dlopen would search system paths).
    let name = format!("libfake-cwd-{}.so", std::process::id());
    std::fs::copy(path, &name).unwrap();
    let r = Model::load(&name);
    std::fs::remove_file(&name).unwrap();
    assert_eq!(r.unwrap().info().producer, "fake 1.0");
}

#[test]
fn input_errors_name_the_input() {
    let Some(path) = good_model() else { return };
    let model = Model::load(path).unwrap();
    let x = x_input(1.0);
    let k = Tensor::from_i64(&[1], vec![2]).unwrap();

    let e = model.run(std::slice::from_ref(&x)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InputCount {
                expected: 2,
                got: 1
            }
        ),
        "{e}"
    );

    let kf = Tensor::from_f32(&[1], vec![2.0]).unwrap();
    let e = model.run(&[x.clone(), kf]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input `k`: expected dtype int64, got float32"
    );

    let x2 = Tensor::zeros(DType::F32, &[3, 4]).unwrap();
    let e = model.run(&[x2, k.clone()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input `x`: expected shape [4, 3], got [3, 4]"
    );

    let mut ws = model.new_workspace().unwrap();
    let mut outs = vec![Tensor::zeros(DType::F32, &[4, 3]).unwrap()];
    let e = model
        .run_into(&[x.clone(), k.clone()], &mut outs, &mut ws, None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutputCount {
                expected: 2,
                got: 1
            }
        ),
        "{e}"
    );
    outs.push(Tensor::zeros(DType::F32, &[4, 3]).unwrap());
    let e = model
        .run_into(&[x.clone(), k.clone()], &mut outs, &mut ws, None)
        .unwrap_err();
    assert!(matches!(e, Error::OutputDtype { .. }), "{e}");

    let mut small = Workspace::new(16, 128).unwrap();
    let e = model
        .run_with(&[x.clone(), k.clone()], &mut small, None)
        .unwrap_err();
    assert!(matches!(e, Error::Workspace { .. }), "{e}");
    let mut misaligned = Workspace::new(4096, 64).unwrap();
    let e = model.run_with(&[x, k], &mut misaligned, None).unwrap_err();
    assert!(matches!(e, Error::Workspace { .. }), "{e}");
}

#[test]
fn nonzero_return_is_run_error() {
    let Some(path) = good_model() else { return };
    let model = Model::load(path).unwrap();
    let mut x = x_input(1.0);
    x.as_f32_mut().unwrap()[0] = f32::NAN;
    let k = Tensor::from_i64(&[1], vec![1]).unwrap();
    let e = model.run(&[x, k]).unwrap_err();
    assert!(matches!(e, Error::Run { code: 7 }), "{e}");
}

#[test]
fn bad_libraries_are_refused() {
    let Some(v2) = fake_model("libfake-v2.so", &["-DABI_VERSION=2"]) else {
        return;
    };
    let e = Model::load(&v2).unwrap_err();
    assert!(
        matches!(
            e,
            Error::AbiVersion {
                found: 2,
                expected: 1
            }
        ),
        "{e}"
    );

    let no_run = fake_model("libfake-norun.so", &["-DNO_RUN"]).unwrap();
    let e = Model::load(&no_run).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingSymbol {
                symbol: "nnc_model_run",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn concurrent_runs_share_one_model_and_pool() {
    let Some(path) = good_model() else { return };
    let model = Model::load(path).unwrap();
    let pool = ThreadPool::new(2);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (model, pool) = (&model, &pool);
            s.spawn(move || {
                let mut ws = model.new_workspace().unwrap();
                for i in 0..200 {
                    let x = x_input((t * 1000 + i) as f32);
                    let k = Tensor::from_i64(&[1], vec![i as i64 - 100]).unwrap();
                    let threads = (i % 2 == 0).then_some(pool);
                    let out = model.run_with(&[x.clone(), k], &mut ws, threads).unwrap();
                    check_outputs(&out, &x, i as i64 - 100);
                }
            });
        }
    });
}
