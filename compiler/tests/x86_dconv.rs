//! Tests of the AVX-512 direct convolution in the channel-blocked layout
//! (`codegen/x86/dconv.rs`): each geometry is packed, assembled, JIT-loaded
//! and run on seeded random non-zero data against a naive f64 reference
//! computed from the unpacked `[m, c, kh, kw]` weights and the plain NCHW
//! input, over a sweep of kernels (1×1, 3×3, 5×5, 7×7, 1×3), strides (1, 2,
//! 2×1), dilation 2, paddings (0, 1, 3, top ≠ left), odd planes, channel
//! counts that leave partial blocks (c = 1, 3, 17, 40; m = 5, 33), block
//! ranges starting past block 0, and bias / residual / relu combinations.
//!
//! Guards:
//! - input lanes past `c` hold NaN (the layout promises zeros, but the
//!   kernel must not spend FLOPs on them: any read of them poisons outputs),
//!   and NaN guard zones lie before and after the input and the weights;
//! - the whole output (all blocks of the conv) is pre-filled with a
//!   sentinel: blocks outside `ocb0..ocb0+mb` must keep it, the lanes past
//!   `m` of the last block must be exactly +0.0;
//! - the residual's lanes past `m` are 0, as the layout promises.
//!
//! Tolerance, per output: 1e-5 × (1 + Σ|terms|), the terms being the bias,
//! every product and the residual (an f32 accumulation bound; an indexing
//! error changes an output by O(one term)). `reference_bugs_are_caught`
//! checks that the comparison rejects references with planted bugs
//! (off-by-one padding, a missing tap).
#![cfg(target_arch = "x86_64")]

#[path = "common/asm_jit.rs"]
mod asm_jit;
#[path = "common/avx512_data.rs"]
mod avx512_data;

use avx512_data::{has_avx512, Rng};

use nnc_compiler::codegen::x86::dconv::{assemble, block_len, pack_weights, DirectConv, CB};
use nnc_compiler::codegen::x86::Level;

type Fn4 = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32);

const SENTINEL: f32 = 12345.0;
const GUARD: usize = 64;

/// One conv geometry (whole conv; the block range is chosen per run).
#[derive(Clone, Copy, Debug)]
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    /// Top, left padding; bottom, right padding.
    pad: [usize; 2],
    pad_end: [usize; 2],
}

impl Geo {
    fn out(&self) -> [usize; 2] {
        let o = |i: usize, n: usize| {
            (n + self.pad[i] + self.pad_end[i] - self.d[i] * (self.k[i] - 1) - 1) / self.s[i] + 1
        };
        [o(0, self.h), o(1, self.w)]
    }

    fn spec(&self, ocb0: usize, mb: usize, relu: bool, residual: bool) -> DirectConv {
        let [oh, ow] = self.out();
        DirectConv {
            tile: None,
            c: self.c,
            h: self.h,
            w: self.w,
            m: self.m,
            oh,
            ow,
            kernel: self.k,
            strides: self.s,
            dil: self.d,
            pad: self.pad,
            ocb0,
            mb,
            relu,
            residual,
        }
    }
}

fn geo(c: usize, hw: [usize; 2], m: usize, k: [usize; 2], s: [usize; 2], pad: [usize; 4]) -> Geo {
    Geo {
        c,
        h: hw[0],
        w: hw[1],
        m,
        k,
        s,
        d: [1, 1],
        pad: [pad[0], pad[1]],
        pad_end: [pad[2], pad[3]],
    }
}

/// Data of one case, plain layouts.
struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    res: Option<Vec<f32>>,
}

/// `[n][hw]` plain → `[n/16][hw][16]` blocked; lanes past `n` set to `pad`.
fn to_blocked(v: &[f32], n: usize, hw: usize, pad: f32) -> Vec<f32> {
    let nb = n.div_ceil(CB);
    let mut out = vec![pad; nb * hw * CB];
    for ch in 0..n {
        for i in 0..hw {
            out[((ch / CB) * hw + i) * CB + ch % CB] = v[ch * hw + i];
        }
    }
    out
}

/// Naive f64 reference of the whole conv: `(value, Σ|terms|)` per plain
/// `[m][oh][ow]` output. `pad` is the top/left padding it assumes.
fn reference(g: &Geo, d: &Data, pad: [usize; 2], skip_tap: Option<[usize; 2]>) -> Vec<(f64, f64)> {
    let [oh, ow] = g.out();
    let [kh, kw] = g.k;
    let mut out = Vec::with_capacity(g.m * oh * ow);
    for o in 0..g.m {
        for oy in 0..oh {
            for ox in 0..ow {
                let b = d.bias.as_ref().map_or(0.0, |b| b[o] as f64);
                let (mut v, mut mag) = (b, b.abs());
                for ci in 0..g.c {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            if skip_tap == Some([ky, kx]) {
                                continue;
                            }
                            let iy = (oy * g.s[0] + ky * g.d[0]) as i64 - pad[0] as i64;
                            let ix = (ox * g.s[1] + kx * g.d[1]) as i64 - pad[1] as i64;
                            if iy < 0 || ix < 0 || iy >= g.h as i64 || ix >= g.w as i64 {
                                continue;
                            }
                            let xv = d.x[(ci * g.h + iy as usize) * g.w + ix as usize] as f64;
                            let wv = d.w[((o * g.c + ci) * kh + ky) * kw + kx] as f64;
                            v += xv * wv;
                            mag += (xv * wv).abs();
                        }
                    }
                }
                if let Some(r) = &d.res {
                    let rv = r[(o * oh + oy) * ow + ox] as f64;
                    v += rv;
                    mag += rv.abs();
                }
                out.push((v, mag));
            }
        }
    }
    out
}

/// Runs the kernel for blocks `ocb0..ocb0+mb` and returns the whole blocked
/// output buffer (sentinel outside the blocks).
fn run_kernel(g: &Geo, d: &Data, ocb0: usize, mb: usize, relu: bool) -> Result<Vec<f32>, String> {
    let s = g.spec(ocb0, mb, relu, d.res.is_some());
    let [oh, ow] = g.out();
    let plane = oh * ow * CB;
    let nbo = g.m.div_ceil(CB);
    let code = assemble(&s, Level::Avx512)?;
    let mut xb = vec![f32::NAN; GUARD];
    xb.extend(to_blocked(&d.x, g.c, g.h * g.w, f32::NAN));
    xb.extend(vec![f32::NAN; GUARD]);
    let mut wb = vec![f32::NAN; GUARD];
    let packed = pack_weights(&s, &d.w, d.bias.as_deref());
    assert_eq!(packed.len(), nbo * block_len(&s));
    wb.extend(packed);
    wb.extend(vec![f32::NAN; GUARD]);
    let res = d.res.as_ref().map(|r| to_blocked(r, g.m, oh * ow, 0.0));
    let mut out = vec![SENTINEL; nbo * plane];
    let jit = asm_jit::jit::<Fn4>(&code);
    let rp = res
        .as_ref()
        .map_or(std::ptr::null(), |r| r[ocb0 * plane..].as_ptr());
    // SAFETY: buffers sized for the spec; the kernel reads x, w + ocb0·block
    // and residual/out at block ocb0, for mb blocks.
    unsafe {
        (jit.f)(
            xb[GUARD..].as_ptr(),
            wb[GUARD + ocb0 * block_len(&s)..].as_ptr(),
            rp,
            out[ocb0 * plane..].as_mut_ptr(),
        )
    };
    Ok(out)
}

/// Compares the kernel's blocked output with the reference.
fn check(
    g: &Geo,
    out: &[f32],
    refv: &[(f64, f64)],
    ocb0: usize,
    mb: usize,
    relu: bool,
) -> Result<(), String> {
    let [oh, ow] = g.out();
    let hw = oh * ow;
    for blk in 0..g.m.div_ceil(CB) {
        let mine = (ocb0..ocb0 + mb).contains(&blk);
        for i in 0..hw {
            for l in 0..CB {
                let got = out[(blk * hw + i) * CB + l];
                let o = blk * CB + l;
                if !mine {
                    if got.to_bits() != SENTINEL.to_bits() {
                        return Err(format!("block {blk} outside the range written at {i}/{l}"));
                    }
                } else if o >= g.m {
                    if got.to_bits() != 0 {
                        return Err(format!("pad lane {l} of block {blk} at {i} is {got}"));
                    }
                } else {
                    let (mut v, mag) = refv[o * hw + i];
                    if relu {
                        v = v.max(0.0);
                    }
                    let tol = 1e-5 * (1.0 + mag);
                    let diff = (got as f64 - v).abs();
                    // NaN (a read of a poisoned lane) fails too.
                    if diff.is_nan() || diff > tol {
                        return Err(format!(
                            "out[{o}][{}][{}] = {got}, want {v} (tol {tol:.2e})",
                            i / ow,
                            i % ow
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn data(g: &Geo, seed: u64, bias: bool, res: bool) -> Data {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let [oh, ow] = g.out();
    Data {
        x: r.vec(g.c * g.h * g.w),
        w: r.vec(g.m * g.c * g.k[0] * g.k[1]),
        bias: bias.then(|| r.vec(g.m)),
        res: res.then(|| r.vec(g.m * oh * ow)),
    }
}

/// All block ranges worth checking for `g`: everything at once, and (with
/// several blocks) a range starting past block 0 that stops before the end
/// or takes the partial last block alone.
fn ranges(m: usize) -> Vec<(usize, usize)> {
    let n = m.div_ceil(CB);
    let mut v = vec![(0, n)];
    if n >= 2 {
        v.push((n - 1, 1));
        v.push((1, n - 1));
    }
    if n >= 4 {
        v.push((1, 2));
        v.push((1, 3));
    }
    v
}

fn case(g: Geo, seed: u64) {
    let combos = [
        (true, false, false),
        (false, false, true),
        (true, true, true),
        (true, true, false),
    ];
    for (i, &(bias, res, relu)) in combos.iter().enumerate() {
        let d = data(&g, seed * 7 + i as u64, bias, res);
        let refv = reference(&g, &d, g.pad, None);
        for (ocb0, mb) in ranges(g.m) {
            let out = run_kernel(&g, &d, ocb0, mb, relu)
                .unwrap_or_else(|e| panic!("{g:?}: assemble failed: {e}"));
            if let Err(e) = check(&g, &out, &refv, ocb0, mb, relu) {
                panic!("{g:?} blocks {ocb0}+{mb} bias {bias} res {res} relu {relu}: {e}");
            }
        }
    }
}

#[test]
fn pointwise() {
    if !has_avx512() {
        return;
    }
    let mut seed = 1;
    for c in [1, 3, 16, 17, 40] {
        for m in [5, 16, 33, 64] {
            for (h, w) in [(1, 1), (5, 7), (13, 11), (7, 29)] {
                case(geo(c, [h, w], m, [1, 1], [1, 1], [0; 4]), seed);
                seed += 1;
            }
        }
    }
    // 1×1 stride 2 (ResNet's downsampling shortcut) and 2×1.
    case(geo(64, [14, 14], 33, [1, 1], [2, 2], [0; 4]), 101);
    case(geo(17, [13, 11], 16, [1, 1], [2, 1], [0; 4]), 102);
}

#[test]
fn three_by_three() {
    if !has_avx512() {
        return;
    }
    let mut seed = 200;
    for c in [1, 3, 16, 17, 40] {
        for m in [5, 33, 64] {
            for (h, w) in [(1, 1), (5, 7), (13, 11), (24, 24), (11, 29)] {
                case(geo(c, [h, w], m, [3, 3], [1, 1], [1; 4]), seed);
                seed += 1;
            }
        }
    }
    for (h, w) in [(5, 7), (13, 13), (24, 29), (2, 2)] {
        // Stride 2, the ResNet down-sampling conv's padding, and no padding.
        case(geo(17, [h, w], 33, [3, 3], [2, 2], [1, 1, 1, 1]), seed);
        case(
            geo(16, [h.max(3), w.max(3)], 16, [3, 3], [2, 2], [0; 4]),
            seed + 1,
        );
        seed += 2;
    }
    // Stride 2×1, asymmetric padding, one-sided padding.
    case(geo(20, [11, 13], 20, [3, 3], [2, 1], [1, 0, 1, 2]), 300);
    case(geo(16, [7, 7], 48, [3, 3], [1, 1], [0, 2, 2, 0]), 301);
    case(geo(5, [13, 24], 16, [3, 3], [1, 1], [2, 1, 0, 1]), 302);
    // Wide rows: several interior tiles (runtime column loop).
    case(geo(16, [4, 56], 32, [3, 3], [1, 1], [1; 4]), 303);
    case(geo(8, [3, 113], 40, [3, 3], [1, 1], [1; 4]), 304);
}

#[test]
fn large_kernels_dilation_and_padding() {
    if !has_avx512() {
        return;
    }
    // 5×5 (MNIST), 7×7 stride 2 pad 3 (ResNet's stem), 1×3, dilation 2.
    case(geo(1, [28, 28], 5, [5, 5], [1, 1], [0; 4]), 400);
    case(geo(3, [13, 11], 20, [5, 5], [1, 1], [2; 4]), 401);
    case(geo(3, [29, 24], 64, [7, 7], [2, 2], [3; 4]), 402);
    case(geo(3, [7, 5], 16, [7, 7], [2, 2], [3; 4]), 403);
    case(geo(17, [11, 13], 33, [7, 7], [1, 1], [3, 3, 3, 3]), 404);
    case(geo(16, [5, 24], 16, [1, 3], [1, 1], [0, 1, 0, 1]), 405);
    case(geo(40, [13, 7], 5, [1, 3], [1, 2], [0, 0, 0, 0]), 406);
    let mut g = geo(17, [13, 11], 33, [3, 3], [1, 1], [2, 2, 2, 2]);
    g.d = [2, 2];
    case(g, 407);
    let mut g = geo(3, [24, 29], 16, [3, 3], [2, 1], [1, 3, 1, 3]);
    g.d = [2, 3];
    case(g, 408);
    // Padding larger than the kernel reach: rows/columns of bias only.
    case(geo(16, [5, 5], 16, [3, 3], [1, 1], [3, 3, 3, 3]), 409);
    // Asymmetric: top ≠ left, more at the end.
    case(geo(16, [11, 11], 33, [5, 5], [2, 2], [1, 3, 2, 0]), 410);
}

/// Output widths 1..=16 and 28 with 5 output blocks: every register tile
/// shape (1–4 blocks per tile, tails of 1–3 blocks, one or several
/// column tiles per row, interior runs).
#[test]
fn tile_shapes() {
    if !has_avx512() {
        return;
    }
    for w in (1..=16).chain([28]) {
        case(geo(17, [3, w], 80, [3, 3], [1, 1], [1; 4]), 500 + w as u64);
    }
    case(geo(3, [4, 60], 50, [1, 1], [1, 1], [0; 4]), 530);
}

/// Input-channel chunks (small output planes: a group's weights split into
/// chunks of ~24 KB, the partial sums kept in `out` between chunks): three
/// or more chunks, a last chunk shorter than the others, with and without
/// the partial input block (alone or after full blocks), rows of padding
/// only, interior column-tile runs; every case with bias / residual / relu
/// and output lanes past `m`.
#[test]
fn input_chunks() {
    if !has_avx512() {
        return;
    }
    // 3×3, 3 blocks per tile (1 input block per chunk): 8 chunks, the last
    // the partial block alone; m = 80: a tail group of 2 blocks.
    case(geo(120, [7, 7], 80, [3, 3], [1, 1], [1; 4]), 600);
    case(geo(120, [7, 7], 40, [3, 3], [1, 1], [1; 4]), 601);
    // One block per tile (the single-block ranges: 2 input blocks per
    // chunk): 88 = 5 full + 8 lanes → chunks 2, 2, 1 full + partial; 80 →
    // 2, 2, 1 (short, no partial block).
    case(geo(88, [5, 7], 33, [3, 3], [1, 1], [1; 4]), 602);
    case(geo(80, [6, 5], 33, [3, 3], [1, 1], [1; 4]), 603);
    // 1×1: 8 input blocks per chunk with 3 output blocks: 300 = 18 full +
    // 12 lanes → 8, 8, 2 full + partial; 1×3 (2 per chunk with 4 blocks).
    case(geo(300, [7, 7], 48, [1, 1], [1, 1], [0; 4]), 604);
    case(geo(200, [9, 5], 70, [1, 3], [1, 1], [0, 1, 0, 1]), 605);
    // 14 wide (2 blocks per tile), stride 2 from 14×14 to 7×7.
    case(geo(100, [14, 14], 36, [3, 3], [1, 1], [1; 4]), 606);
    case(geo(72, [14, 14], 48, [3, 3], [2, 2], [1, 1, 1, 1]), 607);
    // Padding beyond the kernel reach: rows and columns of bias only.
    case(geo(40, [5, 5], 16, [3, 3], [1, 1], [3, 3, 3, 3]), 608);
    // Several identical interior column tiles per row (run-time loop).
    case(geo(40, [2, 60], 32, [3, 3], [1, 1], [1; 4]), 609);
    // 5×5 with dilation 2.
    let mut g = geo(50, [9, 9], 20, [5, 5], [1, 1], [4; 4]);
    g.d = [2, 2];
    case(g, 610);
}

/// The comparison must reject references that differ from the kernel's
/// semantics by one padding step or one tap.
#[test]
fn reference_bugs_are_caught() {
    if !has_avx512() {
        return;
    }
    let g = geo(17, [13, 11], 33, [3, 3], [1, 1], [1; 4]);
    let d = data(&g, 5, true, true);
    let n = g.m.div_ceil(CB);
    let out = run_kernel(&g, &d, 0, n, false).unwrap();
    assert!(check(&g, &out, &reference(&g, &d, g.pad, None), 0, n, false).is_ok());
    for bad in [
        reference(&g, &d, [1, 2], None),
        reference(&g, &d, [2, 1], None),
        reference(&g, &d, [0, 1], None),
        reference(&g, &d, g.pad, Some([2, 2])),
    ] {
        assert!(check(&g, &out, &bad, 0, n, false).is_err());
    }
    // relu applied by the check where the kernel applied none.
    assert!(check(&g, &out, &reference(&g, &d, g.pad, None), 0, n, true).is_err());
}

#[test]
fn unsupported_is_an_error() {
    let g = geo(16, [8, 8], 16, [3, 3], [1, 1], [1; 4]);
    assert!(assemble(&g.spec(0, 1, false, false), Level::Avx2Fma).is_err());
    assert!(assemble(&g.spec(1, 1, false, false), Level::Avx512).is_err());
}

/// GFLOP/s of ResNet-18's conv shapes, one image, best of N runs:
/// `cargo test --release -p nnc-compiler --test x86_dconv -- --ignored --nocapture`.
#[test]
#[ignore]
fn dconv_throughput() {
    if !has_avx512() {
        return;
    }
    let shapes = [
        (
            "64x56x56 3x3 s1",
            geo(64, [56, 56], 64, [3, 3], [1, 1], [1; 4]),
        ),
        (
            "128x28x28 3x3 s1",
            geo(128, [28, 28], 128, [3, 3], [1, 1], [1; 4]),
        ),
        (
            "256x14x14 3x3 s1",
            geo(256, [14, 14], 256, [3, 3], [1, 1], [1; 4]),
        ),
        (
            "512x7x7 3x3 s1",
            geo(512, [7, 7], 512, [3, 3], [1, 1], [1; 4]),
        ),
        (
            "64->128 56x56 3x3 s2",
            geo(64, [56, 56], 128, [3, 3], [2, 2], [1; 4]),
        ),
        (
            "64->128 56x56 1x1 s2",
            geo(64, [56, 56], 128, [1, 1], [2, 2], [0; 4]),
        ),
        (
            "stem 3->64 224 7x7 s2",
            geo(3, [224, 224], 64, [7, 7], [2, 2], [3; 4]),
        ),
    ];
    // DCONV_SHAPE=substring runs only the matching shapes.
    let only = std::env::var("DCONV_SHAPE").ok();
    let picked = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let peak = fma_peak();
    println!("single-core FMA peak (24 independent zmm chains): {peak:.1} GFLOP/s");
    println!("nominal: 2·M·C·KH·KW·OH·OW; executed: padding taps (skipped) left out");
    println!("warm: the same weights every call (cache-resident when they fit)");
    for &(name, g) in shapes.iter().filter(|(n, _)| picked(n)) {
        let n = g.m.div_ceil(CB);
        let s = g.spec(0, n, true, false);
        let [oh, ow] = g.out();
        let code = assemble(&s, Level::Avx512).unwrap();
        let d = data(&g, 9, true, false);
        let x = to_blocked(&d.x, g.c, g.h * g.w, 0.0);
        let w = pack_weights(&s, &d.w, d.bias.as_deref());
        let mut out = vec![0.0f32; n * oh * ow * CB];
        let jit = asm_jit::jit::<Fn4>(&code);
        let flops = 2.0 * (g.m * g.c * g.k[0] * g.k[1] * oh * ow) as f64;
        let exec = 2.0 * (g.m * g.c) as f64 * valid_taps(&g) as f64;
        let best = best_time(0.4, || {
            // SAFETY: buffers sized for the spec.
            unsafe { (jit.f)(x.as_ptr(), w.as_ptr(), std::ptr::null(), out.as_mut_ptr()) };
        });
        let (gf, ex) = (flops / best / 1e9, exec / best / 1e9);
        println!(
            "{name:24} {gf:7.1} GFLOP/s {:5.1}%  executed {ex:7.1} {:5.1}%  {:8.1} us  code {:6} B",
            100.0 * gf / peak,
            100.0 * ex / peak,
            best * 1e6,
            code.len()
        );
    }
    println!("cold: each call reads a different copy of the weights ({COLD_BYTES_MB} MB in all, past the L3)");
    let cold = if std::env::var("DCONV_COLD_ALL").is_ok() {
        &shapes[..]
    } else {
        &shapes[2..4]
    };
    for &(name, g) in cold.iter().filter(|(n, _)| picked(n)) {
        let (gf, us, copies) = cold_throughput(&g);
        println!(
            "{name:24} {gf:7.1} GFLOP/s {:5.1}%  {us:8.1} us/call  ({copies} weight copies)",
            100.0 * gf / peak
        );
    }
}

/// Total bytes of weight copies the cold runs cycle through, in MB: more
/// than the 260 MB L3 of the Sapphire Rapids host, so every call's weights
/// come from DRAM.
const COLD_BYTES_MB: usize = 320;

/// Nominal GFLOP/s, µs per call and the number of copies when every call
/// reads its weights from DRAM: calls cycle through distinct copies of the
/// packed weights (best mean over a few full cycles).
fn cold_throughput(g: &Geo) -> (f64, f64, usize) {
    let n = g.m.div_ceil(CB);
    let s = g.spec(0, n, true, false);
    let [oh, ow] = g.out();
    let code = assemble(&s, Level::Avx512).unwrap();
    let d = data(g, 9, true, false);
    let x = to_blocked(&d.x, g.c, g.h * g.w, 0.0);
    let w = pack_weights(&s, &d.w, d.bias.as_deref());
    let copies = (COLD_BYTES_MB << 20).div_ceil(w.len() * 4).max(16);
    // One allocation, each copy 4 KiB aligned (no copy shares a line).
    let stride = w.len().next_multiple_of(1024);
    let mut ws = vec![0.0f32; copies * stride + 1024];
    let off = ws.as_ptr().align_offset(4096);
    for i in 0..copies {
        ws[off + i * stride..off + i * stride + w.len()].copy_from_slice(&w);
    }
    let mut out = vec![0.0f32; n * oh * ow * CB];
    let jit = asm_jit::jit::<Fn4>(&code);
    let flops = 2.0 * (g.m * g.c * g.k[0] * g.k[1] * oh * ow) as f64;
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = std::time::Instant::now();
        for i in 0..copies {
            let wp = ws[off + i * stride..].as_ptr();
            // SAFETY: buffers sized for the spec.
            unsafe { (jit.f)(x.as_ptr(), wp, std::ptr::null(), out.as_mut_ptr()) };
        }
        best = best.min(t.elapsed().as_secs_f64() / copies as f64);
    }
    (flops / best / 1e9, best * 1e6, copies)
}

/// Taps (output pixel, kernel position) that read the input, not padding.
fn valid_taps(g: &Geo) -> usize {
    let [oh, ow] = g.out();
    let axis = |i: usize, o: usize, n: usize| {
        (0..g.k[i])
            .filter(|&k| {
                let v = (o * g.s[i] + k * g.d[i]) as i64 - g.pad[i] as i64;
                (0..n as i64).contains(&v)
            })
            .count()
    };
    let rows: usize = (0..oh).map(|o| axis(0, o, g.h)).sum();
    let cols: usize = (0..ow).map(|o| axis(1, o, g.w)).sum();
    rows * cols
}

/// Best wall time of `f` over runs spanning about `secs` (at least 5).
fn best_time(secs: f64, mut f: impl FnMut()) -> f64 {
    let start = std::time::Instant::now();
    let mut best = f64::MAX;
    let mut runs = 0;
    while runs < 5 || start.elapsed().as_secs_f64() < secs {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

/// GFLOP/s of a loop of independent `vfmadd231ps zmm` (the core's peak).
fn fma_peak() -> f64 {
    use iced_x86::code_asm::*;
    const ITERS: u32 = 1 << 16;
    let zr = [
        zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13,
        zmm14, zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23,
    ];
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    for &r in &zr {
        a.vpxord(r, r, r).unwrap();
    }
    a.vpxord(zmm30, zmm30, zmm30).unwrap();
    a.vpxord(zmm31, zmm31, zmm31).unwrap();
    a.mov(eax, ITERS).unwrap();
    a.set_label(&mut top).unwrap();
    for &r in &zr {
        a.vfmadd231ps(r, zmm30, zmm31).unwrap();
    }
    a.dec(eax).unwrap();
    a.jne(top).unwrap();
    a.vzeroupper().unwrap();
    a.ret().unwrap();
    let code = a.assemble(0).unwrap();
    let jit = asm_jit::jit::<Fn4>(&code);
    let p = std::ptr::null_mut();
    // SAFETY: the loop touches no memory.
    let best = best_time(0.3, || unsafe { (jit.f)(p, p, p, p) });
    (ITERS as usize * zr.len() * 32) as f64 / best / 1e9
}
