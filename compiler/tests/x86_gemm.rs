//! Tests of the iced-x86 GEMM kernels (`codegen/x86`): each case is assembled,
//! placed in a `JITModule` with `define_function_bytes`, run on seeded data and
//! compared with an f64 reference.
//!
//! Padding elements of A, B and bias are NaN (a kernel that reads and uses one
//! produces NaN); C is surrounded and interleaved with a sentinel (a kernel
//! that writes outside the matrix is caught). Small tilings (`kc`, `mc` of a
//! few elements) drive the K-block and row-block paths on small matrices.
//!
//! Tolerance per element: `(k + 4)·2⁻²³·(|alpha|·Σ|a·b| + |beta·bias|) + 1e-6`,
//! the worst-case bound of f32 accumulation (any indexing error is O(1)).
#![cfg(target_arch = "x86_64")]

#[path = "common/asm_jit.rs"]
mod asm_jit;

use nnc_compiler::codegen::x86;

use x86::{AsmGemm, Level, Tiling};

type GemmFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *const f32);

type Jit = asm_jit::Jit<GemmFn>;

fn jit(bytes: &[u8]) -> Jit {
    asm_jit::jit(bytes)
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
        (self.next() % 2001) as f32 / 1000.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SENTINEL: f32 = 12345.0;

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    alpha: f32,
    /// 0: none, 1: full matrix, 2: row vector [N], 3: column [M] (per row), 4: scalar.
    bias: u8,
    beta: f32,
    relu: bool,
    packed: bool,
    /// Extra elements per row of A/B/C (strided views).
    pad: usize,
}

fn run_case(level: Level, c: Case, tiling: Option<Tiling>, seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    let (m, n, k, pad) = (c.m, c.n, c.k, c.pad);
    // A: [M, K] (row stride K+pad) or transposed: [K, M] (row stride M+pad).
    let (a_row, a_col, a_len) = if c.trans_a {
        (1, m + pad, k * (m + pad))
    } else {
        (k + pad, 1, m * (k + pad))
    };
    let mut a = vec![f32::NAN; a_len + 64];
    for i in 0..m {
        for kk in 0..k {
            a[i * a_row + kk * a_col] = rng.f();
        }
    }
    let b_row = n + pad;
    let mut b = vec![f32::NAN; k * b_row + 64];
    for kk in 0..k {
        for j in 0..n {
            b[kk * b_row + j] = rng.f();
        }
    }
    let c_row = n + pad;
    let (bias_row, bias_col) = match c.bias {
        1 => (n + pad, 1),
        2 => (0, 1),
        3 => (1 + pad, 0),
        4 => (0, 0),
        _ => (0, 0),
    };
    let mut bias = vec![f32::NAN; m * (bias_row + 1) + n + 64];
    for i in 0..m {
        for j in 0..n {
            bias[i * bias_row + j * bias_col] = rng.f();
        }
    }
    let spec = AsmGemm {
        tile: None,
        m,
        n,
        k,
        a_row,
        a_col,
        b_row,
        c_row,
        alpha: c.alpha,
        bias: (c.bias != 0).then_some((bias_row, bias_col, c.beta)),
        relu: c.relu,
        b_packed: c.packed,
    };
    let t = tiling.unwrap_or_else(|| x86::tiling(&spec, level));
    let bytes = x86::assemble_with(&spec, level, &t)?;
    let b_used = if c.packed {
        let mut p = x86::pack_b(&spec, level, &t, &b);
        p.extend(std::iter::repeat_n(f32::NAN, 64));
        p
    } else {
        b.clone()
    };
    let front = 37;
    let mut cbuf = vec![SENTINEL; front + m * c_row + 64];
    let j = jit(&bytes);
    // SAFETY: every buffer covers the extent the spec describes.
    unsafe {
        (j.f)(
            a.as_ptr(),
            b_used.as_ptr(),
            cbuf.as_mut_ptr().add(front),
            bias.as_ptr(),
        )
    };
    let mut worst: Option<(f64, String)> = None;
    for (idx, &got) in cbuf.iter().enumerate() {
        let inside = idx >= front && {
            let e = idx - front;
            e < m * c_row && e % c_row < n
        };
        if !inside {
            if got.to_bits() != SENTINEL.to_bits() {
                return Err(format!("wrote outside C at element {idx} ({got})"));
            }
            continue;
        }
        let e = idx - front;
        let (i, jj) = (e / c_row, e % c_row);
        let mut acc = 0.0f64;
        let mut mag = 0.0f64;
        for kk in 0..k {
            let p = a[i * a_row + kk * a_col] as f64 * b[kk * b_row + jj] as f64;
            acc += p;
            mag += p.abs();
        }
        let mut want = c.alpha as f64 * acc;
        mag *= (c.alpha as f64).abs();
        if c.bias != 0 {
            let bv = c.beta as f64 * bias[i * bias_row + jj * bias_col] as f64;
            want += bv;
            mag += bv.abs();
        }
        if c.relu {
            want = want.max(0.0);
        }
        let tol = (k as f64 + 4.0) * f32::EPSILON as f64 * mag + 1e-6;
        let err = (got as f64 - want).abs();
        if err.is_nan() || err > tol {
            let ratio = if err.is_nan() {
                f64::INFINITY
            } else {
                err / tol
            };
            if worst.as_ref().is_none_or(|w| ratio > w.0) {
                worst = Some((
                    ratio,
                    format!("C[{i},{jj}] = {got}, want {want} (tol {tol:.2e})"),
                ));
            }
        }
    }
    match worst {
        Some((_, msg)) => Err(msg),
        None => Ok(()),
    }
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

fn report(fails: Vec<String>, total: usize) {
    if !fails.is_empty() {
        for f in fails.iter().take(40) {
            eprintln!("{f}");
        }
        panic!("{} of {total} cases failed", fails.len());
    }
    eprintln!("{total} cases passed");
}

const SIZES: [usize; 12] = [1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 65, 129];

fn random_case(rng: &mut Rng, m: usize, n: usize, k: usize) -> Case {
    let bias = rng.below(5) as u8;
    Case {
        m,
        n,
        k,
        trans_a: rng.below(3) == 0,
        alpha: if rng.below(2) == 0 { 1.0 } else { -0.75 },
        bias,
        beta: if rng.below(2) == 0 { 1.0 } else { 0.5 },
        relu: rng.below(2) == 0,
        packed: rng.below(2) == 0,
        pad: if rng.below(3) == 0 { 5 } else { 0 },
    }
}

#[test]
fn all_small_shapes() {
    let small = [1, 3, 7, 8, 15, 16, 17];
    let mut fails = Vec::new();
    let mut total = 0;
    let mut rng = Rng(7);
    for level in levels() {
        for &m in &small {
            for &n in &small {
                for &k in &small {
                    let c = random_case(&mut rng, m, n, k);
                    total += 1;
                    if let Err(e) = run_case(level, c, None, rng.next()) {
                        fails.push(format!("{level:?} {c:?}: {e}"));
                    }
                }
            }
        }
    }
    report(fails, total);
}

#[test]
fn random_shapes() {
    let mut fails = Vec::new();
    let mut total = 0;
    let mut rng = Rng(11);
    for level in levels() {
        for _ in 0..150 {
            let (m, n, k) = (
                SIZES[rng.below(12)],
                SIZES[rng.below(12)],
                SIZES[rng.below(12)],
            );
            let c = random_case(&mut rng, m, n, k);
            total += 1;
            if let Err(e) = run_case(level, c, None, rng.next()) {
                fails.push(format!("{level:?} {c:?}: {e}"));
            }
        }
    }
    report(fails, total);
}

/// Every epilogue form on one shape with tails in M and N.
#[test]
fn epilogue_forms() {
    let mut fails = Vec::new();
    let mut total = 0;
    for level in levels() {
        for bias in 0..5u8 {
            for &(alpha, beta) in &[(1.0, 1.0), (0.5, -2.0), (-1.25, 1.0)] {
                for relu in [false, true] {
                    for trans_a in [false, true] {
                        for packed in [false, true] {
                            let c = Case {
                                m: 31,
                                n: 45,
                                k: 19,
                                trans_a,
                                alpha,
                                bias,
                                beta,
                                relu,
                                packed,
                                pad: 3,
                            };
                            total += 1;
                            if let Err(e) = run_case(level, c, None, 99 + total as u64) {
                                fails.push(format!("{level:?} {c:?}: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    report(fails, total);
}

/// K blocks and row blocks (tiny kc/mc), unroll remainders, odd tiles.
#[test]
fn blocked_schedules() {
    let mut fails = Vec::new();
    let mut total = 0;
    let mut rng = Rng(23);
    for level in levels() {
        let (mr, nv) = match level {
            Level::Avx512 => (14, 2),
            Level::Avx2Fma => (6, 2),
        };
        const PACK: bool = false;
        let tilings = [
            Tiling {
                mr,
                nv,
                ku: 4,
                kc: 8,
                mc: mr * 2,
                pack: PACK,
                prefetch: true,
            },
            Tiling {
                mr,
                nv,
                ku: 3,
                kc: 6,
                mc: mr,
                pack: PACK,
                prefetch: true,
            },
            Tiling {
                mr,
                nv,
                ku: 4,
                kc: 4,
                mc: mr * 3,
                pack: PACK,
                prefetch: true,
            },
            Tiling {
                mr: 4,
                nv: 1,
                ku: 2,
                kc: 10,
                mc: 8,
                pack: PACK,
                prefetch: true,
            },
            Tiling {
                mr: if level == Level::Avx512 { 6 } else { 3 },
                nv: if level == Level::Avx512 { 4 } else { 2 },
                ku: 1,
                kc: 7,
                mc: 12,
                pack: PACK,
                prefetch: true,
            },
        ];
        for t in tilings
            .into_iter()
            .flat_map(|t| [t, Tiling { pack: !t.pack, ..t }])
        {
            for _ in 0..25 {
                let (m, n, k) = (
                    SIZES[rng.below(12)],
                    SIZES[rng.below(12)],
                    SIZES[rng.below(12)],
                );
                let c = random_case(&mut rng, m, n, k);
                total += 1;
                if let Err(e) = run_case(level, c, Some(t), rng.next()) {
                    fails.push(format!("{level:?} {t:?} {c:?}: {e}"));
                }
            }
        }
    }
    report(fails, total);
}

#[test]
fn degenerate_sizes() {
    let mut fails = Vec::new();
    let mut total = 0;
    for level in levels() {
        for &(m, n, k) in &[(0, 5, 3), (5, 0, 3), (4, 5, 0), (1, 1, 1)] {
            let c = Case {
                m,
                n,
                k,
                trans_a: false,
                alpha: 2.0,
                bias: 2,
                beta: 1.0,
                relu: false,
                packed: false,
                pad: 0,
            };
            total += 1;
            if let Err(e) = run_case(level, c, None, 5) {
                fails.push(format!("{level:?} {c:?}: {e}"));
            }
        }
    }
    report(fails, total);
}

/// `C += A·B` with the bias pointer equal to C (attention's O update), with
/// K blocking and runtime packing.
#[test]
fn bias_aliases_c() {
    let mut fails = Vec::new();
    let mut total = 0;
    for level in levels() {
        for &(m, n, k) in &[(31usize, 45usize, 70usize), (16, 64, 129), (3, 17, 40)] {
            for kc in [8, 1000] {
                for pack in [false, true] {
                    total += 1;
                    let mut rng = Rng(total as u64);
                    let a: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.f()).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.f()).collect();
                    let spec = AsmGemm {
                        tile: None,
                        m,
                        n,
                        k,
                        a_row: k,
                        a_col: 1,
                        b_row: n,
                        c_row: n,
                        alpha: 1.0,
                        bias: Some((n, 1, 1.0)),
                        relu: false,
                        b_packed: false,
                    };
                    let mut t = x86::tiling(&spec, level);
                    t.kc = kc;
                    t.pack = pack;
                    let bytes = x86::assemble_with(&spec, level, &t).unwrap();
                    let j = jit(&bytes);
                    let mut c = c0.clone();
                    // SAFETY: buffers match the spec; bias is C.
                    unsafe { (j.f)(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), c.as_ptr()) };
                    for i in 0..m {
                        for jj in 0..n {
                            let mut want = c0[i * n + jj] as f64;
                            for kk in 0..k {
                                want += a[i * k + kk] as f64 * b[kk * n + jj] as f64;
                            }
                            let got = c[i * n + jj] as f64;
                            if (got - want).abs() > 1e-4 {
                                fails.push(format!("{level:?} {m}x{n}x{k} kc{kc} pack{pack}: C[{i},{jj}] {got} want {want}"));
                            }
                        }
                    }
                }
            }
        }
    }
    report(fails, total);
}

/// Pre-packed B with the next-panel prefetch on and off, the default row
/// tile for each M (14 rows, or fewer where 14 would leave a 1–3 row tail),
/// whole and split row blocks, at odd sizes.
#[test]
fn packed_b_tiles_and_prefetch() {
    let ms = [1, 3, 15, 16, 17, 29, 63, 65, 128, 129];
    let nks = [1, 3, 17, 63, 65, 129];
    let mut fails = Vec::new();
    let mut total = 0;
    let mut rng = Rng(31);
    for level in levels() {
        for &m in &ms {
            for &n in &nks {
                for &k in &nks {
                    let mut c = random_case(&mut rng, m, n, k);
                    c.packed = true;
                    let spec = AsmGemm {
                        tile: None,
                        m,
                        n,
                        k,
                        a_row: k,
                        a_col: 1,
                        b_row: n,
                        c_row: n,
                        alpha: c.alpha,
                        bias: None,
                        relu: false,
                        b_packed: true,
                    };
                    let t = x86::tiling(&spec, level);
                    if level == Level::Avx512 && m >= 14 && n > 16 {
                        assert!(m.is_multiple_of(t.mr) || m % t.mr >= 4, "{m}: {t:?}");
                    }
                    for (mc, prefetch) in [(t.mc, true), (t.mc, false), (2 * t.mr, true)] {
                        let t = Tiling { mc, prefetch, ..t };
                        total += 1;
                        if let Err(e) = run_case(level, c, Some(t), rng.next()) {
                            fails.push(format!("{level:?} {t:?} {c:?}: {e}"));
                        }
                    }
                }
            }
        }
    }
    report(fails, total);
}
