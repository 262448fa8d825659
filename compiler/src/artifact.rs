//! The artifact: object file from the Cranelift object module, a shared
//! library linked by the system C compiler, and the generated C header.

use crate::codegen::{self, status, target::Target};
use crate::ir::Graph;
use crate::lower::Plan;
use cranelift_module::default_libcall_names;
use cranelift_object::{ObjectBuilder, ObjectModule};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ABI types, verbatim from `runtime/include/nnc.h` (one source of truth).
const NNC_H: &str = include_str!("../../runtime/include/nnc.h");

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Codegen(#[from] codegen::CodegenError),
    #[error("writing the object file: {0}")]
    Object(String),
    #[error("{0}")]
    Link(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Emits the model as a relocatable object (ELF for Linux targets).
pub fn object(
    g: &Graph,
    plan: &Plan,
    prefix: &str,
    target: Target,
) -> Result<Vec<u8>, ArtifactError> {
    let has_fma = target.has_fma;
    let gemm_level = target.gemm_level;
    let builder = ObjectBuilder::new(
        target.isa,
        prefix.as_bytes().to_vec(),
        default_libcall_names(),
    )
    .map_err(|e| ArtifactError::Object(e.to_string()))?;
    let mut module = ObjectModule::new(builder);
    codegen::define_model(
        &mut module,
        g,
        plan,
        prefix,
        &codegen::Options {
            has_fma,
            gemm_level,
        },
    )?;
    let product = module.finish();
    product
        .emit()
        .map_err(|e| ArtifactError::Object(e.to_string()))
}

/// Links `obj` into a shared library at `out` with `linker` (a C compiler
/// driver). Only libc is needed (aligned_alloc/free).
pub fn link(obj: &[u8], out: &Path, linker: &str) -> Result<(), ArtifactError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let obj_path = dir.join(format!(".{stem}.{}.o", std::process::id()));
    std::fs::write(&obj_path, obj).map_err(|e| ArtifactError::Io {
        path: obj_path.clone(),
        source: e,
    })?;
    let result = Command::new(linker)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .arg(&obj_path)
        // Reproducible output and no executable stack.
        .args([
            "-Wl,--build-id=none",
            "-Wl,-z,noexecstack",
            "-Wl,-z,relro",
            "-Wl,-z,now",
            "-Wl,--hash-style=gnu",
        ])
        .output();
    let _ = std::fs::remove_file(&obj_path);

    /// For a cross driver named `<triple>-gcc` (a bare name or a path, with
    /// an optional version suffix such as `-12`): the triple and the Debian
    /// packages that provide it (`gcc-<triple>`, with `_` spelled `-`) and
    /// the target's libc (`libc6-dev-<debian arch>-cross`, when known).
    fn cross_gcc(linker: &str) -> Option<(String, String, Option<String>)> {
        let base = Path::new(linker).file_name()?.to_str()?;
        let unversioned = base.trim_end_matches(|c: char| c.is_ascii_digit());
        let base = match unversioned.strip_suffix('-') {
            Some(b) if unversioned.len() < base.len() => b,
            _ => base,
        };
        let triple = base.strip_suffix("-gcc")?;
        if !triple.contains('-') {
            return None;
        }
        let arch = triple.split('-').next()?;
        let debian_arch = match arch {
            "aarch64" => Some("arm64"),
            "x86_64" => Some("amd64"),
            "i386" | "i486" | "i586" | "i686" => Some("i386"),
            "arm" if triple.ends_with("gnueabihf") => Some("armhf"),
            "arm" => Some("armel"),
            "riscv64" => Some("riscv64"),
            "powerpc64le" => Some("ppc64el"),
            "s390x" => Some("s390x"),
            _ => None,
        };
        Some((
            triple.to_string(),
            format!("gcc-{}", triple.replace('_', "-")),
            debian_arch.map(|a| format!("libc6-dev-{a}-cross")),
        ))
    }

    let cross = cross_gcc(linker);
    let obj_name = Path::new(&stem).with_extension("o").display().to_string();
    match (result, cross) {
        (Err(e), Some((triple, gcc, libc))) if e.kind() == std::io::ErrorKind::NotFound => {
            let pkgs = match libc {
                Some(l) => format!("{gcc} {l}"),
                None => gcc,
            };
            let driver = Path::new(linker)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| linker.to_string());
            Err(ArtifactError::Link(format!(
                "linker '{linker}' not found: it is the C cross compiler that links {triple} libraries\n  \
                 install it (Debian/Ubuntu): apt-get install {pkgs}\n  \
                 or pass --linker PATH to link with another C compiler driver for this target,\n  \
                 or --emit obj to write only the object file and link it elsewhere:\n    \
                 {driver} -shared -o {stem} {obj_name}"
            )))
        }
        (Err(e), None) if e.kind() == std::io::ErrorKind::NotFound => Err(ArtifactError::Link(format!(
            "linker '{linker}' not found: install a C compiler (Debian/Ubuntu: apt-get install gcc), \
             pass --linker PATH, or use --emit obj to write only the object file"
        ))),
        (Err(e), _) => Err(ArtifactError::Link(format!("running linker '{linker}': {e}"))),
        (Ok(o), cross) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let hint = match cross {
                // The driver is there but the target's libc / crt files are not.
                Some((_, _, Some(libc)))
                    if stderr.contains("cannot find") || stderr.contains("No such file") =>
                {
                    format!("\n  (is the target's C library installed? Debian/Ubuntu: apt-get install {libc})")
                }
                _ => String::new(),
            };
            Err(ArtifactError::Link(format!(
                "linker '{linker}' failed ({}):\n{}{hint}",
                o.status,
                stderr.trim()
            )))
        }
        (Ok(_), _) => Ok(()),
    }
}

/// `nnc.h`'s ABI type block (guarded, so the header coexists with nnc.h).
fn abi_types() -> &'static str {
    let start = NNC_H
        .find("#ifndef NNC_ABI_TYPES_DEFINED")
        .expect("nnc.h has the types block");
    let end_marker = "#endif /* NNC_ABI_TYPES_DEFINED */";
    let end = NNC_H
        .find(end_marker)
        .expect("nnc.h closes the types block")
        + end_marker.len();
    &NNC_H[start..end]
}

fn c_comment_safe(s: &str) -> String {
    s.replace("*/", "* /")
}

/// The self-contained C header for a compiled model.
pub fn header(g: &Graph, plan: &Plan, prefix: &str) -> String {
    let guard = format!("NNC_MODEL_{}_H", prefix.to_ascii_uppercase());
    let mut s = String::new();
    s.push_str(&format!(
        "/* Generated by {} for model \"{}\". Do not edit. */\n",
        codegen::PRODUCER,
        c_comment_safe(&g.name)
    ));
    s.push_str(&format!(
        "#ifndef {guard}\n#define {guard}\n\n#include <stddef.h>\n#include <stdint.h>\n\n"
    ));
    s.push_str("#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    s.push_str(abi_types());
    s.push_str("\n\n");
    let up = prefix.to_ascii_uppercase();
    s.push_str("/* Inputs, in graph order (dense row-major buffers):\n");
    for (i, &v) in g.inputs.iter().enumerate() {
        s.push_str(&format!(
            " *   [{i}] \"{}\": {}\n",
            c_comment_safe(&g.value(v).name),
            g.ty(v)
        ));
    }
    s.push_str(" * Outputs, in graph order:\n");
    for (i, o) in g.outputs.iter().enumerate() {
        s.push_str(&format!(
            " *   [{i}] \"{}\": {}\n",
            c_comment_safe(&o.name),
            g.ty(o.value)
        ));
    }
    s.push_str(" */\n");
    s.push_str(&format!(
        "#define {up}_NUM_INPUTS {}\n#define {up}_NUM_OUTPUTS {}\n",
        g.inputs.len(),
        g.outputs.len()
    ));
    s.push_str(&format!(
        "#define {up}_WORKSPACE_SIZE {}u\n#define {up}_WORKSPACE_ALIGN {}u\n",
        plan.workspace_size,
        crate::lower::ALIGN
    ));
    for (i, &v) in g.inputs.iter().enumerate() {
        s.push_str(&format!(
            "#define {up}_INPUT{i}_NUMEL {}u\n",
            g.ty(v).numel()
        ));
    }
    for (i, o) in g.outputs.iter().enumerate() {
        s.push_str(&format!(
            "#define {up}_OUTPUT{i}_NUMEL {}u\n",
            g.ty(o.value).numel()
        ));
    }
    s.push_str(&format!(
        "\n/* Status codes of {prefix}_run. */\n#define NNC_OK {}\n#define NNC_ERR_NULL_ARGUMENT {}\n#define NNC_ERR_ALLOC_FAILED {}\n#define NNC_ERR_INDEX_OUT_OF_RANGE {}\n\n",
        status::OK,
        status::NULL_ARGUMENT,
        status::ALLOC_FAILED,
        status::INDEX_OUT_OF_RANGE
    ));
    s.push_str(&format!(
        "/* Static description of the model (names, shapes, workspace size). */\nconst nnc_model_info *{prefix}_info(void);\n\n\
/* Runs the model. `workspace` may be NULL (allocated per call) or\n * {up}_WORKSPACE_SIZE bytes aligned to {up}_WORKSPACE_ALIGN; `threads` may be NULL.\n * Returns NNC_OK or an NNC_ERR_* code. Runs with distinct workspaces may\n * proceed concurrently. The same functions are also exported as\n * nnc_model_info / nnc_model_run for dlsym-based loaders. */\n\
int {prefix}_run(const void *const *inputs, void *const *outputs, void *workspace, const nnc_threads *threads);\n\n"
    ));
    s.push_str("#ifdef __cplusplus\n} /* extern \"C\" */\n#endif\n\n");
    s.push_str(&format!("#endif /* {guard} */\n"));
    s
}

/// A C identifier from a file stem: non-alphanumerics become `_`, and a
/// leading digit gets a `_` prefix.
pub fn prefix_from_stem(stem: &str) -> String {
    let mut p: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if p.is_empty() || p.starts_with(|c: char| c.is_ascii_digit()) {
        p.insert(0, '_');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(prefix_from_stem("mnist-cnn.v2"), "mnist_cnn_v2");
        assert_eq!(prefix_from_stem("3d"), "_3d");
    }

    /// A weight read only pre-packed (a constant GEMM operand on the
    /// assembled kernels) is embedded once, not also raw: the object is
    /// smaller than twice the weight; without assembled kernels the GEMM
    /// reads the raw weight, which must then be there.
    #[test]
    fn prepacked_weights_are_embedded_once() {
        use crate::codegen::target;
        use crate::ir::{DType, Graph, Op, Tensor, TensorType};
        let mut g = Graph::new("t");
        let ty = TensorType {
            dtype: DType::F32,
            shape: vec![64, 512],
        };
        let x = g.add_input("x", ty);
        let (k, n) = (512, 1024);
        let data: Vec<f32> = (0..k * n).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect();
        let w = g.add_const("w", Tensor::f32(vec![k, n], data).unwrap());
        let y = g.add_op("y", Op::MatMul, &[x, w]).unwrap();
        g.add_output("y", y);
        let (pg, plan) = crate::pipeline::prepare(g).unwrap();
        let t = target::build(&target::host_triple(), target::Cpu::Native, true).unwrap();
        let asm = t.gemm_level.is_some();
        let obj = object(&pg, &plan, "t", t).unwrap();
        let wbytes = 4 * k * n;
        if asm {
            assert!(obj.len() < wbytes * 3 / 2, "{} bytes", obj.len());
        } else {
            assert!(obj.len() >= wbytes, "{} bytes", obj.len());
        }
    }

    #[test]
    fn abi_block_is_guarded() {
        let t = abi_types();
        assert!(t.starts_with("#ifndef NNC_ABI_TYPES_DEFINED"));
        assert!(t.contains("typedef struct nnc_threads"));
    }
}
