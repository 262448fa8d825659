//! Single-thread GEMM throughput: the iced-x86 kernels (AVX-512, AVX2; B read
//! in place with runtime packing, and pre-packed at compile time), a one-node
//! MatMul graph through the JIT (column "jit": whatever the host gets, B an
//! input) and the same with `NNC_ASM_GEMM=off` (column "cranelift": the
//! f32x4 Cranelift GEMM).
//!
//! `cargo run -p nnc-compiler --example gemm_bench [filter]`; the filter
//! picks shapes whose name contains it. Tiling overrides for tuning:
//! `NNC_MR`, `NNC_NV`, `NNC_KU`, `NNC_KC`, `NNC_MC`. `NNC_BENCH_SECS` sets the
//! time per measurement (default 0.3 s); the best of the runs is reported.

#[cfg(target_arch = "x86_64")]
use nnc_compiler::codegen::x86;

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("gemm_bench measures the x86-64 kernels only");
}

#[cfg(target_arch = "x86_64")]
fn main() {
    bench::main()
}

#[cfg(target_arch = "x86_64")]
mod bench {
    use super::x86::{self, AsmGemm, Level, Tiling};
    use cranelift_codegen::ir::{types, AbiParam};
    use cranelift_codegen::settings::{self, Configurable};
    use cranelift_jit::{JITBuilder, JITModule};
    use cranelift_module::{default_libcall_names, Linkage, Module};
    use nnc_compiler::ir::{DType, Graph, Op, TensorType};
    use nnc_compiler::jit::JitModel;
    use nnc_compiler::pipeline;
    use std::time::Instant;

    type GemmFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *const f32);

    fn jit(bytes: &[u8]) -> (JITModule, GemmFn) {
        let mut flags = settings::builder();
        flags.set("is_pic", "false").unwrap();
        let isa = cranelift_native::builder()
            .unwrap()
            .finish(settings::Flags::new(flags))
            .unwrap();
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut sig = module.make_signature();
        for _ in 0..4 {
            sig.params.push(AbiParam::new(types::I64));
        }
        let id = module.declare_function("g", Linkage::Local, &sig).unwrap();
        module.define_function_bytes(id, 64, bytes, &[]).unwrap();
        module.finalize_definitions().unwrap();
        let p = module.get_finalized_function(id);
        // SAFETY: the bytes are a SysV function with this signature.
        (module, unsafe {
            std::mem::transmute::<*const u8, GemmFn>(p)
        })
    }

    /// Best seconds per call over repeated timed batches.
    fn time(mut f: impl FnMut()) -> f64 {
        let secs: f64 = std::env::var("NNC_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.3);
        f();
        let t0 = Instant::now();
        f();
        let once = t0.elapsed().as_secs_f64().max(1e-7);
        // Short batches: on a shared machine a few ms usually run uninterrupted.
        let per_batch = ((0.002 / once).ceil() as usize).max(1);
        let mut best = f64::INFINITY;
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / per_batch as f64);
        }
        best
    }

    /// `NNC_CALLS=n` (with `NNC_SHAPE`, `NNC_PACKED=0|1`): exactly n calls of
    /// the AVX-512 kernel and exit, for `perf stat -e cycles:u` (user cycles
    /// per call hold up better than wall time on a shared machine).
    fn fixed_calls(calls: usize) {
        let s: Vec<usize> = std::env::var("NNC_SHAPE")
            .expect("NNC_SHAPE=M,K,N")
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        let (m, k, n) = (s[0], s[1], s[2]);
        let packed = env("NNC_PACKED").unwrap_or(1) != 0;
        let spec = AsmGemm::dense(m, n, k, packed);
        let level = Level::Avx512;
        let t = tiling_for(&spec, level);
        let bytes = x86::assemble_with(&spec, level, &t).expect("assemble");
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let b = if packed {
            x86::pack_b(&spec, level, &t, &b)
        } else {
            b
        };
        let mut c = vec![0f32; m * n];
        let (_module, f) = jit(&bytes);
        for _ in 0..calls {
            // SAFETY: buffers match the spec.
            unsafe { f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), std::ptr::null()) };
        }
        eprintln!("{t:?} flop/call {}", 2 * m * n * k);
    }

    fn env(name: &str) -> Option<usize> {
        std::env::var(name).ok().and_then(|s| s.parse().ok())
    }

    fn tiling_for(spec: &AsmGemm, level: Level) -> Tiling {
        let mut t = x86::tiling(spec, level);
        if level == Level::Avx512 {
            t.mr = env("NNC_MR").unwrap_or(t.mr);
            t.nv = env("NNC_NV").unwrap_or(t.nv);
            t.mc = env("NNC_MC").unwrap_or(t.mc);
        }
        t.ku = env("NNC_KU").unwrap_or(t.ku);
        t.kc = env("NNC_KC").unwrap_or(t.kc);
        if let Some(p) = env("NNC_PACK") {
            t.pack = p != 0;
        }
        if let Some(p) = env("NNC_PREFETCH") {
            t.prefetch = p != 0;
        }
        t
    }

    fn asm_gflops(
        m: usize,
        n: usize,
        k: usize,
        level: Level,
        packed: bool,
    ) -> (f64, Tiling, usize) {
        let spec = AsmGemm::dense(m, n, k, packed);
        let t = tiling_for(&spec, level);
        let bytes = x86::assemble_with(&spec, level, &t).expect("assemble");
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let b = if packed {
            x86::pack_b(&spec, level, &t, &b)
        } else {
            b
        };
        let mut c = vec![0f32; m * n];
        let (_module, f) = jit(&bytes);
        // SAFETY: buffers match the spec.
        let s = time(|| unsafe { f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), std::ptr::null()) });
        (2.0 * (m * n * k) as f64 / s / 1e9, t, bytes.len())
    }

    /// A one-node MatMul graph through the JIT (A and B are inputs).
    fn jit_gflops(m: usize, n: usize, k: usize, backend: &str) -> f64 {
        let mut g = Graph::new("mm");
        let a = g.add_input("a", TensorType::new(DType::F32, vec![m, k]));
        let b = g.add_input("b", TensorType::new(DType::F32, vec![k, n]));
        let y = g.add_op("y", Op::MatMul, &[a, b]).unwrap();
        g.add_output("y", y);
        let (pg, plan) = pipeline::prepare(g).unwrap();
        // The JIT picks the GEMM backend from NNC_ASM_GEMM at compile time.
        std::env::set_var("NNC_ASM_GEMM", backend);
        let model = JitModel::compile(&pg, &plan).unwrap();
        std::env::remove_var("NNC_ASM_GEMM");
        let av = vec![0.5f32; m * k];
        let bv = vec![0.25f32; k * n];
        let mut cv = vec![0f32; m * n];
        let ins = [av.as_ptr() as *const u8, bv.as_ptr() as *const u8];
        let outs = [cv.as_mut_ptr() as *mut u8];
        let s = time(|| unsafe {
            model.run_raw(&ins, &outs);
        });
        2.0 * (m * n * k) as f64 / s / 1e9
    }

    /// Register-only FMA loop: the machine's FMA ceiling for `width` bits.
    fn peak(width: u32) -> f64 {
        use iced_x86::code_asm::*;
        use iced_x86::Register;
        let mut a = CodeAssembler::new(64).unwrap();
        let iters = 10_000u32;
        let mut l = a.create_label();
        a.mov(eax, iters).unwrap();
        a.set_label(&mut l).unwrap();
        for i in 0..24u32 {
            if width == 512 {
                let r = get_zmm(Register::ZMM0 + i).unwrap();
                a.vfmadd231ps(r, zmm30, zmm31).unwrap();
            } else {
                let r = get_ymm(Register::YMM0 + i % 12).unwrap();
                a.vfmadd231ps(r, ymm14, ymm15).unwrap();
            }
        }
        a.dec(eax).unwrap();
        a.jne(l).unwrap();
        a.vzeroupper().unwrap();
        a.ret().unwrap();
        let bytes = a.assemble(0).unwrap();
        let (_m, f) = jit(&bytes);
        let s = time(|| unsafe {
            f(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        });
        let lanes = (width / 32) as f64;
        24.0 * iters as f64 * lanes * 2.0 / s / 1e9
    }

    pub fn main() {
        if let Some(calls) = env("NNC_CALLS") {
            return fixed_calls(calls);
        }
        if std::env::var("NNC_PEAK").is_ok() {
            println!(
                "peak fma: zmm {:.1} GFLOP/s, ymm {:.1} GFLOP/s",
                peak(512),
                peak(256)
            );
        }
        let filter = std::env::args().nth(1).unwrap_or_default();
        let mut shapes: Vec<(&str, usize, usize, usize)> = vec![
            ("1024^3", 1024, 1024, 1024),
            ("bert-qkv 128x768x768", 128, 768, 768),
            ("bert-ff1 128x768x3072", 128, 3072, 768),
            ("bert-ff2 128x3072x768", 128, 768, 3072),
            ("conv 64x576x3136", 64, 3136, 576),
            ("conv 512x4608x49", 512, 49, 4608),
        ];
        // NNC_SHAPE=M,K,N adds a custom shape.
        let custom: Option<(usize, usize, usize)> = std::env::var("NNC_SHAPE").ok().and_then(|s| {
            let v: Vec<usize> = s.split(',').filter_map(|x| x.parse().ok()).collect();
            (v.len() == 3).then(|| (v[0], v[2], v[1]))
        });
        if let Some((m, n, k)) = custom {
            shapes.insert(0, ("custom", m, n, k));
        }
        let has512 = std::arch::is_x86_feature_detected!("avx512f");
        let has2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let skip_cl = std::env::var("NNC_NO_CRANELIFT").is_ok();
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (GFLOP/s, single thread; MxKxN)",
            "shape", "512", "512+pack", "avx2", "avx2+pack", "jit", "cranelift"
        );
        for (name, m, n, k) in shapes {
            if !name.contains(filter.as_str()) {
                continue;
            }
            let mut cols = Vec::new();
            let mut info = String::new();
            for (level, ok) in [(Level::Avx512, has512), (Level::Avx2Fma, has2)] {
                for packed in [false, true] {
                    if ok {
                        let (gf, t, len) = asm_gflops(m, n, k, level, packed);
                        cols.push(format!("{gf:9.1}"));
                        if !packed {
                            info += &format!(
                                " {level:?}: {}x{} ku{} kc{} mc{}{} {}B;",
                                t.mr,
                                t.nv,
                                t.ku,
                                t.kc,
                                t.mc,
                                if t.pack { " rtpack" } else { "" },
                                len
                            );
                        }
                    } else {
                        cols.push(format!("{:>9}", "-"));
                    }
                }
            }
            let cl = if skip_cl {
                format!("{:>9} {:>9}", "-", "-")
            } else {
                format!(
                    "{:9.1} {:9.1}",
                    jit_gflops(m, n, k, ""),
                    jit_gflops(m, n, k, "off")
                )
            };
            println!("{name:<24} {} {cl}  {info}", cols.join(" "));
        }
    }
}
