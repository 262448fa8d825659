//! Tests of the assembled softmax kernels (`codegen/x86/softmax.rs`) at
//! every x86 level the CPU has: the vector exp against f64 (dense sweep and
//! special values) and bit for bit against the Cranelift exp of the `Exp`
//! op, and the attention key-block update and row softmax against scalar
//! references, with guard elements around every buffer.
#![cfg(target_arch = "x86_64")]

#[path = "common/asm_jit.rs"]
mod asm_jit;

use nnc_compiler::codegen::x86::softmax::{assemble, SoftmaxKernel};
use nnc_compiler::codegen::x86::Level;
use nnc_compiler::ir::{DType, Graph, Op, TensorType, UnaryOp};
use nnc_compiler::jit::JitModel;
use nnc_compiler::pipeline;

type Fn4 = unsafe extern "C" fn(*mut f32, *mut f32, *mut f32, *mut f32);

type Jit = asm_jit::Jit<Fn4>;

fn jit(bytes: &[u8]) -> Jit {
    asm_jit::jit(bytes)
}

fn levels() -> Vec<Level> {
    let mut v = Vec::new();
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        v.push(Level::Avx2Fma);
    }
    if std::arch::is_x86_feature_detected!("avx512f") {
        v.push(Level::Avx512);
    }
    if v.is_empty() {
        eprintln!("skipping: CPU has neither AVX2+FMA nor AVX-512F");
    }
    v
}

/// Runs an `Exp` kernel over `xs`.
fn asm_exp(level: Level, xs: &[f32], bounded: bool) -> Vec<f32> {
    let n = xs.len();
    let k = SoftmaxKernel::Exp { n, bounded };
    let f = jit(&assemble(&k, level).unwrap());
    let mut x = xs.to_vec();
    let mut y = vec![SENTINEL; n + 1];
    // SAFETY: x has n elements, y n + 1; the kernel touches n of each.
    unsafe {
        (f.f)(
            x.as_mut_ptr(),
            y.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(y[n].to_bits(), SENTINEL.to_bits(), "exp wrote past n");
    y.truncate(n);
    y
}

/// The Cranelift `Exp` op on `xs` (through the JIT pipeline).
fn cranelift_exp(xs: &[f32]) -> Vec<f32> {
    let mut g = Graph::new("exp");
    let x = g.add_input("x", TensorType::new(DType::F32, vec![xs.len()]));
    let y = g.add_op("y", Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    g.add_output("y", y);
    let (pg, plan) = pipeline::prepare(g).unwrap();
    let m = JitModel::compile(&pg, &plan).unwrap();
    let mut out = vec![0f32; xs.len()];
    assert_eq!(m.run_f32(&[xs], &mut [&mut out]), 0);
    out
}

const SENTINEL: f32 = 12345.0;

/// Error of `got` against exp(x) in f64: (ulps of the nearest f32, relative).
fn exp_err(x: f32, got: f32) -> (f64, f64) {
    let r = (x as f64).exp();
    if x.is_nan() {
        assert!(got.is_nan(), "exp(NaN) = {got}");
        return (0.0, 0.0);
    }
    let rf = r as f32;
    if rf.is_infinite() {
        assert!(got.is_infinite() && got > 0.0, "exp({x}) = {got}, want inf");
        return (0.0, 0.0);
    }
    let err = (got as f64 - r).abs();
    let a = rf.abs().max(f32::MIN_POSITIVE);
    let ulp = (f32::from_bits(a.to_bits() + 1) - a) as f64;
    let rel = if r > 0.0 { err / r } else { 0.0 };
    (err / ulp, rel)
}

/// Dense sweep over the whole f32 exp domain plus special values: a few
/// ulp at most, and the same bits as the Cranelift exp.
#[test]
fn exp_accuracy_and_bits() {
    const N: usize = 400_003;
    let mut xs: Vec<f32> = (0..N)
        .map(|i| (-104.0 + (89.0 + 104.0) * i as f64 / (N - 1) as f64) as f32)
        .collect();
    xs.extend([
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        -f32::NAN,
        0.0,
        -0.0,
        -87.336_55,
        -87.4,
        -103.9,
        -1e30,
        f32::MIN,
        88.722_83,
        88.73,
        1e-30,
        -1e-30,
        f32::MIN_POSITIVE,
    ]);
    let want_bits = cranelift_exp(&xs);
    for level in levels() {
        for bounded in [false, true] {
            // Bounded exp: only x ≤ 0 or NaN.
            let ins: Vec<f32> = xs
                .iter()
                .copied()
                .filter(|x| !bounded || x.is_nan() || *x <= 0.0)
                .collect();
            let got = asm_exp(level, &ins, bounded);
            let (mut max_ulp, mut at_ulp, mut max_rel) = (0f64, 0f32, 0f64);
            for (&x, &y) in ins.iter().zip(&got) {
                let (u, r) = exp_err(x, y);
                // ulp and relative error on normal outputs; below the normal
                // range (x < −87.34) the result is flushed to 0 by design
                // (as the Cranelift exp), an absolute error under 2^−126.
                if (x as f64).exp() >= f32::MIN_POSITIVE as f64 {
                    if u > max_ulp {
                        (max_ulp, at_ulp) = (u, x);
                    }
                    max_rel = max_rel.max(r);
                } else {
                    assert!(
                        y.is_nan() == x.is_nan() && (y.is_nan() || y.abs() <= f32::MIN_POSITIVE),
                        "{level:?}: exp({x}) = {y}"
                    );
                }
            }
            eprintln!(
                "[accuracy] {level:?} exp (bounded {bounded}): max {max_ulp:.2} ulp (x = {at_ulp}), max rel {max_rel:.3e} (normal outputs)"
            );
            assert!(max_ulp <= 2.0, "{level:?}: {max_ulp} ulp at {at_ulp}");
            assert!(max_rel <= 2.5e-7, "{level:?}: rel {max_rel}");
            // Bit-identical to the Cranelift exp (NaN: any NaN).
            let mut j = 0;
            for (&x, &w) in xs.iter().zip(&want_bits) {
                if bounded && x > 0.0 {
                    continue;
                }
                let y = got[j];
                j += 1;
                assert!(
                    y.to_bits() == w.to_bits() || (y.is_nan() && w.is_nan()),
                    "{level:?} bounded {bounded}: exp({x:e}) = {y:e}, Cranelift {w:e}"
                );
            }
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn f(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 1000.0 - 10.0
    }
}

fn close(got: f32, want: f64, tol: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    (got as f64 - want).abs() <= tol * (1.0 + want.abs())
}

/// The online key-block update against an f64 reference of the same
/// formulas, including rows whose running max is still −inf and masked
/// (−inf) scores.
#[test]
fn online_block() {
    let mut rng = Rng(7);
    let mut fails = Vec::new();
    let mut total = 0;
    for level in levels() {
        for &rows in &[1usize, 3, 32] {
            for &n in &[1usize, 3, 7, 8, 15, 16, 17, 63, 64, 65, 127, 128] {
                for (&dv, first) in [1usize, 7, 8, 16, 17, 64, 80]
                    .iter()
                    .flat_map(|d| [(d, false), (d, true)])
                {
                    total += 1;
                    let ld = n + (n % 3);
                    let k = SoftmaxKernel::Online {
                        rows,
                        n,
                        ld,
                        dv,
                        first,
                    };
                    let f = jit(&assemble(&k, level).unwrap());
                    let mut s: Vec<f32> = (0..rows * ld + 1).map(|_| rng.f()).collect();
                    let mut m: Vec<f32> = (0..rows + 1).map(|_| rng.f()).collect();
                    let mut l: Vec<f32> = (0..rows + 1).map(|_| rng.f().abs()).collect();
                    let mut o: Vec<f32> = (0..rows * dv + 1).map(|_| rng.f()).collect();
                    // Row 0: nothing seen yet; row 1 (if any): all masked.
                    // First block: no row has seen anything, O = 0.
                    if first {
                        for r in 0..rows {
                            m[r] = f32::NEG_INFINITY;
                            l[r] = 0.0;
                        }
                        for x in &mut o[..rows * dv] {
                            *x = 0.0;
                        }
                    }
                    m[0] = f32::NEG_INFINITY;
                    l[0] = 0.0;
                    if rows > 1 {
                        m[1] = f32::NEG_INFINITY;
                        l[1] = 0.0;
                        for j in 0..n {
                            s[ld + j] = f32::NEG_INFINITY;
                        }
                    }
                    if n > 2 {
                        s[2] = f32::NEG_INFINITY;
                    }
                    let (s0, m0, l0, o0) = (s.clone(), m.clone(), l.clone(), o.clone());
                    // SAFETY: every buffer covers what the kernel touches (+1 guard).
                    unsafe {
                        (f.f)(
                            s.as_mut_ptr(),
                            m.as_mut_ptr(),
                            l.as_mut_ptr(),
                            o.as_mut_ptr(),
                        )
                    };
                    let mut bad = Vec::new();
                    for r in 0..rows {
                        let row = &s0[r * ld..r * ld + n];
                        let bmax = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        let mn = m0[r].max(bmax);
                        let ms = if mn == f32::NEG_INFINITY {
                            0.0
                        } else {
                            mn as f64
                        };
                        let c = (m0[r] as f64 - ms).exp();
                        let mut sum = 0.0;
                        for j in 0..ld {
                            let (got, x) = (s[r * ld + j], s0[r * ld + j]);
                            if j >= n {
                                if got.to_bits() != x.to_bits() {
                                    bad.push(format!("S[{r},{j}] padding changed"));
                                }
                                continue;
                            }
                            let e = (x as f64 - ms).exp();
                            sum += e;
                            if !close(got, e, 1e-6) {
                                bad.push(format!("S[{r},{j}] = {got}, want {e}"));
                            }
                        }
                        if m[r].to_bits() != mn.to_bits() {
                            bad.push(format!("m[{r}] = {}, want {mn}", m[r]));
                        }
                        let lw = l0[r] as f64 * c + sum;
                        if !close(l[r], lw, 1e-5) {
                            bad.push(format!("l[{r}] = {}, want {lw}", l[r]));
                        }
                        for j in 0..dv {
                            let w = o0[r * dv + j] as f64 * c;
                            if !close(o[r * dv + j], w, 1e-6) {
                                bad.push(format!("O[{r},{j}] = {}, want {w}", o[r * dv + j]));
                            }
                        }
                    }
                    for (name, v, len) in [
                        ("S", &s, rows * ld),
                        ("m", &m, rows),
                        ("l", &l, rows),
                        ("O", &o, rows * dv),
                    ] {
                        let orig = match name {
                            "S" => &s0,
                            "m" => &m0,
                            "l" => &l0,
                            _ => &o0,
                        };
                        if v[len].to_bits() != orig[len].to_bits() {
                            bad.push(format!("{name} written past its end"));
                        }
                    }
                    if !bad.is_empty() {
                        fails.push(format!(
                            "{level:?} {k:?}: {}",
                            bad[..bad.len().min(3)].join("; ")
                        ));
                    }
                }
            }
        }
    }
    assert!(
        fails.is_empty(),
        "{} of {total} failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// Row softmax against f64.
#[test]
fn row_softmax() {
    let mut rng = Rng(3);
    let mut fails = Vec::new();
    for level in levels() {
        for &rows in &[1usize, 2, 5] {
            for &n in &[1usize, 2, 7, 8, 9, 16, 17, 100, 1000] {
                let k = SoftmaxKernel::Rows { rows, n };
                let f = jit(&assemble(&k, level).unwrap());
                let mut x: Vec<f32> = (0..rows * n + 1).map(|_| rng.f()).collect();
                if n > 3 {
                    x[1] = f32::NEG_INFINITY;
                }
                let mut y = vec![SENTINEL; rows * n + 1];
                // SAFETY: rows·n elements (+1 guard) each.
                unsafe {
                    (f.f)(
                        x.as_mut_ptr(),
                        y.as_mut_ptr(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                if y[rows * n] != SENTINEL {
                    fails.push(format!("{level:?} {k:?}: wrote past the end"));
                }
                for r in 0..rows {
                    let row = &x[r * n..(r + 1) * n];
                    let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                    let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                    for j in 0..n {
                        let w = (row[j] as f64 - m).exp() / s;
                        let g = y[r * n + j];
                        if !close(g, w, 1e-6) {
                            fails.push(format!("{level:?} {k:?}: y[{r},{j}] = {g}, want {w}"));
                            break;
                        }
                    }
                }
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

/// Timing of the attention block kernel (ignored; `--ignored --nocapture`).
#[test]
#[ignore]
fn online_block_timing() {
    for level in levels() {
        for first in [true, false] {
            let (rows, n, dv) = (32, 128, 8);
            let k = SoftmaxKernel::Online {
                rows,
                n,
                ld: n,
                dv,
                first,
            };
            let f = jit(&assemble(&k, level).unwrap());
            let mut rng = Rng(1);
            let s0: Vec<f32> = (0..rows * n).map(|_| rng.f()).collect();
            let mut s = s0.clone();
            let mut m = vec![0f32; rows];
            let mut l = vec![0f32; rows];
            let mut o = vec![0f32; rows * dv];
            let reps = 20000;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                s.copy_from_slice(&s0);
                // SAFETY: buffers sized for the kernel.
                unsafe {
                    (f.f)(
                        s.as_mut_ptr(),
                        m.as_mut_ptr(),
                        l.as_mut_ptr(),
                        o.as_mut_ptr(),
                    )
                };
            }
            let ns = t.elapsed().as_nanos() as f64 / (reps * rows) as f64;
            eprintln!("{level:?} first {first}: {ns:.1} ns per row of {n}");
        }
        // The bare exp over the same number of elements.
        let n = 32 * 128;
        let f = jit(&assemble(&SoftmaxKernel::Exp { n, bounded: true }, level).unwrap());
        let mut x: Vec<f32> = (0..n).map(|i| -((i % 97) as f32) / 7.0).collect();
        let mut y = vec![0f32; n];
        let reps = 20000;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            // SAFETY: n elements each.
            unsafe {
                (f.f)(
                    x.as_mut_ptr(),
                    y.as_mut_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        let ns = t.elapsed().as_nanos() as f64 / (reps * 32) as f64;
        eprintln!("{level:?} bare exp: {ns:.1} ns per 128 elements");
    }
}
