//! Tests of the Winograd F(2×2, 3×3) transform kernels
//! (`codegen/x86/winograd.rs`): each chunk spec is assembled, JIT-loaded and
//! run on seeded random data against a scalar f64 reference of the same
//! formulas, over a sweep of widths (odd and even), paddings, chunk heights
//! and positions (top, middle, bottom: the `row_ok` patterns of a real
//! conv), channel counts, panel widths and epilogues; and a whole 3×3 conv
//! computed through both kernels is compared with a direct convolution.
//!
//! Guards: input rows outside the tensor are NaN (a kernel that reads a row
//! it was told is padding produces NaN); a read outside a row's columns
//! picks up a neighbouring row's non-zero value instead of the reference's
//! zero. V is pre-filled with NaN (its padding columns must become exactly
//! 0.0), product columns past the chunk are NaN (must be ignored), and y is
//! pre-filled with a sentinel that must survive everywhere outside the
//! chunk's outputs.
//!
//! Tolerance: 1e-5 × the largest |reference value| of the case (the kernels
//! add a few f32 terms of magnitude ≤ that; any indexing error is O(1));
//! 1e-4 for the end-to-end conv (f32 GEMM sums over the channels).
#![cfg(target_arch = "x86_64")]

#[path = "common/asm_jit.rs"]
mod asm_jit;
#[path = "common/avx512_data.rs"]
mod avx512_data;

use avx512_data::{has_avx512, Rng};

use nnc_compiler::codegen::x86::winograd::{assemble_in, assemble_out, WinoIn, WinoOut};

type Fn4 = unsafe extern "C" fn(*const f32, *mut f32, *const f32, *const f32);

fn jit(bytes: &[u8]) -> asm_jit::Jit<Fn4> {
    asm_jit::jit(bytes)
}

const SENTINEL: f32 = 12345.0;

const BT: [[f64; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

/// Bᵀ·d·B.
fn input_tile(d: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut v = [[0.0; 4]; 4];
    for (i, vi) in v.iter_mut().enumerate() {
        for (j, vij) in vi.iter_mut().enumerate() {
            for k in 0..4 {
                for l in 0..4 {
                    *vij += BT[i][k] * d[k][l] * BT[j][l];
                }
            }
        }
    }
    v
}

/// Aᵀ·m·A.
fn output_tile(m: &[[f64; 4]; 4]) -> [[f64; 2]; 2] {
    let mut y = [[0.0; 2]; 2];
    for (i, yi) in y.iter_mut().enumerate() {
        for (j, yij) in yi.iter_mut().enumerate() {
            for k in 0..4 {
                for l in 0..4 {
                    *yij += AT[i][k] * m[k][l] * AT[j][l];
                }
            }
        }
    }
    y
}

/// Input rows read by tile rows ty0..ty0+tr of a conv with `h` input rows.
fn row_ok(h: usize, pad: usize, ty0: usize, tr: usize) -> Vec<bool> {
    (0..tr * 4)
        .map(|i| {
            let ih = (2 * (ty0 + i / 4) + i % 4) as i64 - pad as i64;
            (0..h as i64).contains(&ih)
        })
        .collect()
}

/// A C×H×W tensor with `guard` NaN elements on both sides.
struct Input {
    buf: Vec<f32>,
    guard: usize,
    h: usize,
    w: usize,
}

impl Input {
    /// `data`: C·H·W elements.
    fn new(data: &[f32], h: usize, w: usize) -> Self {
        assert!(data.len().is_multiple_of(h * w));
        let guard = 8 * w + 64;
        let mut buf = vec![f32::NAN; guard];
        buf.extend_from_slice(data);
        buf.extend(std::iter::repeat_n(f32::NAN, guard));
        Input { buf, guard, h, w }
    }

    /// x(ci, ih, iw), 0 outside the tensor.
    fn at(&self, ci: usize, ih: i64, iw: i64) -> f64 {
        if (0..self.h as i64).contains(&ih) && (0..self.w as i64).contains(&iw) {
            self.buf[self.guard + (ci * self.h + ih as usize) * self.w + iw as usize] as f64
        } else {
            0.0
        }
    }

    /// Pointer to channel 0, row `ih` (possibly before the tensor).
    fn row_ptr(&self, ih: i64) -> *const f32 {
        let at = self.guard as i64 + ih * self.w as i64;
        assert!(at >= 0);
        self.buf[at as usize..].as_ptr()
    }
}

/// V_ξ(ci, tile (ty, tx)) of a conv input.
fn v_ref(x: &Input, pad: usize, ci: usize, ty: usize, tx: usize) -> [[f64; 4]; 4] {
    let mut d = [[0.0; 4]; 4];
    for (r, dr) in d.iter_mut().enumerate() {
        for (c, drc) in dr.iter_mut().enumerate() {
            let ih = (2 * ty + r) as i64 - pad as i64;
            let iw = (2 * tx + c) as i64 - pad as i64;
            *drc = x.at(ci, ih, iw);
        }
    }
    input_tile(&d)
}

/// Runs the input transform of chunk (ty0, tr) and returns V (16·np·C,
/// the packed layout), checking the guard after it.
fn run_in(g: &WinoIn, x: &Input, pad: usize, ty0: usize) -> Vec<f32> {
    let f = jit(&assemble_in(g).unwrap_or_else(|e| panic!("{g:?}: {e}")));
    let len = 16 * g.np * g.channels;
    let mut v = vec![f32::NAN; len + 64];
    let xp = x.row_ptr((2 * ty0) as i64 - pad as i64);
    // SAFETY: the kernel reads only the chunk's valid rows (inside `x.buf`)
    // and writes the first `len` elements of `v`.
    unsafe { (f.f)(xp, v.as_mut_ptr(), std::ptr::null(), std::ptr::null()) };
    assert!(v[len..].iter().all(|e| e.is_nan()), "{g:?}: wrote past V");
    v.truncate(len);
    v
}

/// Index in packed V of (ξ, ci, j).
fn v_idx(g: &WinoIn, xi: usize, ci: usize, j: usize) -> usize {
    xi * g.np * g.channels + (j / g.nr) * g.nr * g.channels + ci * g.nr + j % g.nr
}

#[allow(clippy::too_many_arguments)]
fn check_in(
    rng: &mut Rng,
    h: usize,
    w: usize,
    pad: usize,
    tw: usize,
    ty0: usize,
    tr: usize,
    ch: usize,
    nr: usize,
) {
    let x = Input::new(&rng.vec(ch * h * w), h, w);
    let n = tr * tw;
    let g = WinoIn {
        w,
        plane: h * w,
        pad_w: pad,
        tw,
        tr,
        row_ok: row_ok(h, pad, ty0, tr),
        channels: ch,
        nr,
        np: n.div_ceil(nr) * nr,
        xi_stride: n.div_ceil(nr) * nr * ch,
    };
    let v = run_in(&g, &x, pad, ty0);
    let mut want = vec![0.0f64; v.len()];
    for ci in 0..ch {
        for j in 0..n {
            let t = v_ref(&x, pad, ci, ty0 + j / tw, j % tw);
            for xi in 0..16 {
                want[v_idx(&g, xi, ci, j)] = t[xi / 4][xi % 4];
            }
        }
    }
    let scale = want.iter().fold(0.0f64, |m, e| m.max(e.abs())).max(1e-30);
    for xi in 0..16 {
        for ci in 0..ch {
            for j in 0..g.np {
                let i = v_idx(&g, xi, ci, j);
                let got = v[i];
                if j >= n {
                    assert_eq!(
                        got.to_bits(),
                        0,
                        "{g:?} h={h} ty0={ty0}: padding column ξ={xi} ci={ci} j={j} is {got}"
                    );
                } else {
                    assert!(
                        (got as f64 - want[i]).abs() <= 1e-5 * scale,
                        "{g:?} h={h} ty0={ty0}: V ξ={xi} ci={ci} j={j}: {got} vs {}",
                        want[i]
                    );
                }
            }
        }
    }
}

/// (tw, th) of a conv output: ceil halves, or floor when pooled.
fn tiles(oh: usize, ow: usize, pool: bool) -> (usize, usize) {
    if pool {
        (ow / 2, oh / 2)
    } else {
        (ow.div_ceil(2), oh.div_ceil(2))
    }
}

/// Top, middle and bottom chunk starts of `tr` tile rows out of `th`.
fn chunk_starts(th: usize, tr: usize) -> Vec<usize> {
    let mut s = vec![0, (th - tr) / 2, th - tr];
    s.dedup();
    s
}

/// Input heights for width `w`: itself, and a taller one of the same parity
/// (room for middle chunks of 4 tile rows).
fn heights(w: usize) -> Vec<usize> {
    if w >= 12 {
        vec![w]
    } else {
        vec![w, w + 12]
    }
}

const WIDTHS: [usize; 7] = [1, 5, 7, 13, 28, 33, 56];

#[test]
fn input_transform_sweep() {
    if !has_avx512() {
        return;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut cases = 0;
    for w in WIDTHS {
        for h in heights(w) {
            for pad in 0..2 {
                let (Some(oh), Some(ow)) =
                    ((h + 2 * pad).checked_sub(2), (w + 2 * pad).checked_sub(2))
                else {
                    continue;
                };
                for pool in [false, true] {
                    let (tw, th) = tiles(oh, ow, pool);
                    for tr in (1..=4).filter(|&tr| tr <= th && tw > 0) {
                        for ty0 in chunk_starts(th, tr) {
                            for ch in [1, 3, 17, 64] {
                                for nr in [16, 32, 64] {
                                    check_in(&mut rng, h, w, pad, tw, ty0, tr, ch, nr);
                                    cases += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("{cases} input-transform cases");
    assert!(cases > 1000);
}

/// A chunk's output transform and the conv output it writes into.
struct OutCase {
    g: WinoOut,
    /// Output rows of the whole conv (pooled rows with `pool`).
    rows: usize,
    ty0: usize,
}

/// Runs the output transform and checks every element of the output
/// buffer against the reference (sentinel outside the chunk's outputs).
fn check_out(rng: &mut Rng, c: &OutCase) {
    let g = &c.g;
    let n = g.tr * g.tw;
    let ch = g.channels;
    // Products: junk (NaN) past the chunk's columns.
    let mut m = vec![f32::NAN; 16 * ch * g.np + 64];
    for xi in 0..16 {
        for co in 0..ch {
            for j in 0..n {
                m[(xi * ch + co) * g.np + j] = rng.f();
            }
        }
    }
    let bias = rng.vec(ch);
    // Output: the whole conv output of `ch` planes between guards.
    let guard = 64;
    let total = guard + ch * g.plane + guard;
    let mut y = vec![SENTINEL; total];
    let first = if g.pool { c.ty0 } else { 2 * c.ty0 };
    let mut want: Vec<Option<f64>> = vec![None; total];
    for co in 0..ch {
        for j in 0..n {
            let (rr, tx) = (j / g.tw, j % g.tw);
            let mut mt = [[0.0; 4]; 4];
            for xi in 0..16 {
                mt[xi / 4][xi % 4] = m[(xi * ch + co) * g.np + j] as f64;
            }
            let yt = output_tile(&mt);
            let b = if g.bias { bias[co] as f64 } else { 0.0 };
            let relu = |v: f64| if g.relu { v.max(0.0) } else { v };
            if g.pool {
                let mx = yt[0][0].max(yt[0][1]).max(yt[1][0]).max(yt[1][1]);
                let i = guard + co * g.plane + (first + rr) * g.ow + tx;
                assert!(first + rr < c.rows && tx < g.ow);
                want[i] = Some(relu(mx + b));
                continue;
            }
            for (a, ya) in yt.iter().enumerate() {
                let row = first + 2 * rr + a;
                if a == 1 && !g.row2_ok[rr] {
                    assert!(row >= c.rows, "row2_ok false for an existing row");
                    continue;
                }
                assert!(row < c.rows);
                for (bb, &v) in ya.iter().enumerate() {
                    let col = 2 * tx + bb;
                    if col >= g.ow {
                        continue;
                    }
                    let i = guard + co * g.plane + row * g.ow + col;
                    let mut v = v + b;
                    if g.accumulate {
                        y[i] = rng.f();
                        v += y[i] as f64;
                    }
                    want[i] = Some(relu(v));
                }
            }
        }
    }
    let f = jit(&assemble_out(g).unwrap_or_else(|e| panic!("{g:?}: {e}")));
    let yp = y[guard + first * g.ow..].as_mut_ptr();
    // SAFETY: the kernel reads 16·ch·np products and ch biases and writes
    // the chunk's outputs, all inside the buffers (checked below).
    unsafe { (f.f)(m.as_ptr(), yp, bias.as_ptr(), std::ptr::null()) };
    let scale = want
        .iter()
        .flatten()
        .fold(0.0f64, |m, e| m.max(e.abs()))
        .max(1e-30);
    for (i, (&got, w)) in y.iter().zip(&want).enumerate() {
        let at = i as i64 - guard as i64;
        let (co, rest) = (at.div_euclid(g.plane as i64), at.rem_euclid(g.plane as i64));
        let (row, col) = (rest / g.ow as i64, rest % g.ow as i64);
        match w {
            Some(w) => assert!(
                (got as f64 - w).abs() <= 1e-5 * scale,
                "{g:?} ty0={}: y[co={co}, row={row}, col={col}] = {got}, want {w}",
                c.ty0
            ),
            None => assert_eq!(
                got.to_bits(),
                SENTINEL.to_bits(),
                "{g:?} ty0={}: wrote y[co={co}, row={row}, col={col}] = {got}",
                c.ty0
            ),
        }
    }
}

#[test]
fn output_transform_sweep() {
    if !has_avx512() {
        return;
    }
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut cases = 0usize;
    for w in WIDTHS {
        for h in heights(w) {
            for pad in 0..2 {
                let (Some(oh), Some(ow)) =
                    ((h + 2 * pad).checked_sub(2), (w + 2 * pad).checked_sub(2))
                else {
                    continue;
                };
                for pool in [false, true] {
                    let (tw, th) = tiles(oh, ow, pool);
                    for tr in (1..=4).filter(|&tr| tr <= th && tw > 0) {
                        for ty0 in chunk_starts(th, tr) {
                            for ch in [1, 3, 17, 64] {
                                for flags in 0..8 {
                                    let (bias, accumulate, relu) =
                                        (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
                                    if pool && accumulate {
                                        continue;
                                    }
                                    let nr = [16, 32, 64][cases % 3];
                                    let (rows, width) = if pool { (th, tw) } else { (oh, ow) };
                                    let c = OutCase {
                                        g: WinoOut {
                                            channels: ch,
                                            np: (tr * tw).div_ceil(nr) * nr,
                                            xi_stride: (tr * tw).div_ceil(nr) * nr * ch,
                                            tw,
                                            tr,
                                            ow: width,
                                            plane: rows * width,
                                            row2_ok: (0..tr)
                                                .map(|rr| pool || 2 * (ty0 + rr) + 1 < oh)
                                                .collect(),
                                            bias,
                                            accumulate,
                                            relu,
                                            pool,
                                        },
                                        rows,
                                        ty0,
                                    };
                                    check_out(&mut rng, &c);
                                    cases += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("{cases} output-transform cases");
    assert!(cases > 1000);
}

/// Epilogue of the end-to-end conv.
#[derive(Clone, Copy)]
struct Epi {
    bias: bool,
    accumulate: bool,
    relu: bool,
    pool: bool,
}

/// A 3×3 stride-1 conv (pad 1) through U (weight transform), the input
/// transform, 16 scalar products and the output transform, chunk by chunk,
/// against a direct convolution.
fn conv_end_to_end(cin: usize, cout: usize, h: usize, w: usize, tr: usize, nr: usize, e: Epi) {
    let mut rng = Rng(0x1234_5678 + (cin * 131 + cout * 17 + h * 7 + w) as u64);
    let pad = 1;
    let (oh, ow) = (h, w);
    let x = Input::new(&rng.vec(cin * h * w), h, w);
    let wt = rng.vec(cout * cin * 9);
    let bias = rng.vec(cout);
    // Direct conv (+ bias), f64.
    let mut conv = vec![0.0f64; cout * oh * ow];
    for co in 0..cout {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = if e.bias { bias[co] as f64 } else { 0.0 };
                for ci in 0..cin {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let ih = (oy + ky) as i64 - pad as i64;
                            let iw = (ox + kx) as i64 - pad as i64;
                            s += wt[((co * cin + ci) * 3 + ky) * 3 + kx] as f64 * x.at(ci, ih, iw);
                        }
                    }
                }
                conv[(co * oh + oy) * ow + ox] = s;
            }
        }
    }
    let relu = |v: f64| if e.relu { v.max(0.0) } else { v };
    let (tw, th) = tiles(oh, ow, e.pool);
    let (rows, width) = if e.pool { (th, tw) } else { (oh, ow) };
    let mut addend = vec![0.0f32; cout * rows * width];
    if e.accumulate {
        addend = rng.vec(addend.len());
    }
    let want: Vec<f64> = if e.pool {
        let mut p = vec![0.0; cout * th * tw];
        for co in 0..cout {
            for py in 0..th {
                for px in 0..tw {
                    let at =
                        |dy: usize, dx: usize| conv[(co * oh + 2 * py + dy) * ow + 2 * px + dx];
                    let mx = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                    p[(co * th + py) * tw + px] = relu(mx);
                }
            }
        }
        p
    } else {
        conv.iter()
            .zip(&addend)
            .map(|(&c, &a)| relu(c + a as f64))
            .collect()
    };
    // U_ξ(co, ci) = (G·g·Gᵀ)[ξ/4][ξ%4].
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0.0f32; 16 * cout * cin];
    for co in 0..cout {
        for ci in 0..cin {
            let k = &wt[(co * cin + ci) * 9..][..9];
            for xi in 0..16 {
                let (a, b) = (xi / 4, xi % 4);
                let mut s = 0.0;
                for i in 0..3 {
                    for j in 0..3 {
                        s += G[a][i] * k[i * 3 + j] as f64 * G[b][j];
                    }
                }
                u[(xi * cout + co) * cin + ci] = s as f32;
            }
        }
    }
    // Output between sentinel guards of two rows.
    let guard = 2 * width;
    let mut y = vec![SENTINEL; guard];
    if e.accumulate {
        y.extend_from_slice(&addend);
    } else {
        y.extend(std::iter::repeat_n(SENTINEL, addend.len()));
    }
    y.extend(std::iter::repeat_n(SENTINEL, guard));
    let mut ty0 = 0;
    while ty0 < th {
        let tr = tr.min(th - ty0);
        let n = tr * tw;
        let np = n.div_ceil(nr) * nr;
        let gi = WinoIn {
            w,
            plane: h * w,
            pad_w: pad,
            tw,
            tr,
            row_ok: row_ok(h, pad, ty0, tr),
            channels: cin,
            nr,
            np,
            xi_stride: np * cin,
        };
        let v = run_in(&gi, &x, pad, ty0);
        // M_ξ = U_ξ · V_ξ (f32 sums, as a GEMM would).
        let mut m = vec![f32::NAN; 16 * cout * np];
        for xi in 0..16 {
            for co in 0..cout {
                for j in 0..np {
                    let mut s = 0.0f32;
                    for ci in 0..cin {
                        s += u[(xi * cout + co) * cin + ci] * v[v_idx(&gi, xi, ci, j)];
                    }
                    m[(xi * cout + co) * np + j] = s;
                }
            }
        }
        let go = WinoOut {
            channels: cout,
            np,
            xi_stride: np * cout,
            tw,
            tr,
            ow: width,
            plane: rows * width,
            row2_ok: (0..tr)
                .map(|rr| e.pool || 2 * (ty0 + rr) + 1 < oh)
                .collect(),
            bias: e.bias,
            accumulate: e.accumulate,
            relu: e.relu,
            pool: e.pool,
        };
        let f = jit(&assemble_out(&go).unwrap());
        let first = if e.pool { ty0 } else { 2 * ty0 };
        // SAFETY: the chunk's outputs lie inside `y`; m and bias are whole.
        unsafe {
            (f.f)(
                m.as_ptr(),
                y[guard + first * width..].as_mut_ptr(),
                bias.as_ptr(),
                std::ptr::null(),
            )
        };
        ty0 += tr;
    }
    let (head, rest) = y.split_at(guard);
    let (y, tail) = rest.split_at(want.len());
    assert!(
        head.iter().chain(tail).all(|&s| s == SENTINEL),
        "conv {cin}→{cout} {h}×{w}: wrote outside the output"
    );
    let scale = want.iter().fold(0.0f64, |m, e| m.max(e.abs()));
    for (i, (&got, &w)) in y.iter().zip(&want).enumerate() {
        assert!(
            (got as f64 - w).abs() <= 1e-4 * scale,
            "conv {cin}→{cout} {h}×{w}: y[{i}] = {got}, want {w}"
        );
    }
}

#[test]
fn conv_through_both_transforms() {
    if !has_avx512() {
        return;
    }
    let e = Epi {
        bias: true,
        accumulate: false,
        relu: true,
        pool: false,
    };
    // Odd output (row2_ok false at the bottom), chunks of 2 + 2 + 1 tile rows.
    conv_end_to_end(5, 7, 9, 11, 2, 16, e);
    // Residual addend, several panels.
    let acc = Epi {
        bias: false,
        accumulate: true,
        relu: false,
        ..e
    };
    conv_end_to_end(16, 8, 14, 13, 4, 32, acc);
    // Fused pool (odd conv output: the last row and column are dropped).
    let pool = Epi { pool: true, ..e };
    conv_end_to_end(3, 4, 8, 8, 3, 16, pool);
    conv_end_to_end(6, 5, 11, 9, 2, 64, pool);
    // ResNet layer-1-like width.
    conv_end_to_end(8, 8, 12, 56, 4, 32, e);
}

/// Times both kernels on ResNet layer-1 geometry (56×56, 64 channels,
/// chunks of 4 tile rows, NR 32): `cargo test --release -p nnc-compiler
/// --test x86_winograd -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_resnet_layer1() {
    if !has_avx512() {
        return;
    }
    let (h, w, ch, tr, nr) = (56usize, 56, 64, 4, 32);
    let tw = 28usize;
    let n = tr * tw;
    let np = n.div_ceil(nr) * nr;
    let mut rng = Rng(7);
    let x = Input::new(&rng.vec(ch * h * w), h, w);
    let gi = WinoIn {
        w,
        plane: h * w,
        pad_w: 1,
        tw,
        tr,
        row_ok: row_ok(h, 1, 4, tr),
        channels: ch,
        nr,
        np,
        xi_stride: np * ch,
    };
    let go = WinoOut {
        channels: ch,
        np,
        xi_stride: np * ch,
        tw,
        tr,
        ow: w,
        plane: h * w,
        row2_ok: vec![true; tr],
        bias: true,
        accumulate: false,
        relu: true,
        pool: false,
    };
    let (bytes_in, bytes_out) = (assemble_in(&gi).unwrap(), assemble_out(&go).unwrap());
    println!(
        "code: in {} bytes, out {} bytes",
        bytes_in.len(),
        bytes_out.len()
    );
    let fi = jit(&bytes_in);
    let fo = jit(&bytes_out);
    // V, M and y 64-byte aligned (as in the runtime's arena; the heap gives
    // 16); the input rows are 224 bytes long anyway.
    let aligned = |len: usize| {
        let buf = vec![0.0f32; len + 16];
        let at = buf.as_ptr().align_offset(64);
        (buf, at)
    };
    let (mut v, v0) = aligned(16 * np * ch);
    let (mut m, m0) = aligned(16 * np * ch);
    m[m0..].copy_from_slice(&rng.vec(16 * np * ch + 16 - m0));
    let bias = rng.vec(ch);
    let (mut y, y0) = aligned(ch * h * w);
    let xp = x.row_ptr(2 * 4 - 1);
    let time = |f: &mut dyn FnMut()| {
        let mut best = f64::MAX;
        for _ in 0..7 {
            let reps = 2000;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        best
    };
    let vp = v[v0..].as_mut_ptr();
    let mp = m[m0..].as_ptr();
    let yp = y[y0 + 8 * w..].as_mut_ptr();
    // SAFETY: as in the sweeps; the chunk at tile row 4 is interior.
    let ti = time(&mut || unsafe { (fi.f)(xp, vp, std::ptr::null(), std::ptr::null()) });
    let to = time(&mut || unsafe { (fo.f)(mp, yp, bias.as_ptr(), std::ptr::null()) });
    // Bytes: input rows read (2tr+2 per channel) + V written; M read + y written.
    let bi = ((2 * tr + 2) * w * ch + 16 * np * ch) * 4;
    let bo = (16 * n * ch + 2 * tr * w * ch) * 4;
    for (name, t, b) in [("in", ti, bi), ("out", to, bo)] {
        println!(
            "winograd {name}: {:.0} ns/call, {:.2} ns/tile·channel, {:.1} GB/s ({} KiB moved)",
            t * 1e9,
            t * 1e9 / (n * ch) as f64,
            b as f64 / t / 1e9,
            b / 1024
        );
    }
}
