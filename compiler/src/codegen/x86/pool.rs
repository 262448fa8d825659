//! AVX-512 max pooling across the output width.
//!
//! Cranelift's scalar `fmax` (NaN-propagating, lowered to a compare-and-fix
//! sequence on x86) made a 2×2 pool cost as much as a convolution. Here each
//! output row is computed 16 outputs at a time: per tap one load (unit
//! stride) or two loads and a `vpermt2ps` picking the even elements (stride
//! 2), then `vmaxps`. Horizontal padding and the row end are static lane
//! masks (masked-off lanes read nothing and hold −inf); vertical clipping
//! follows the caller's runs of output rows with one valid tap range.
//!
//! ```text
//! void f(const float* x, float* y, size_t planes, size_t unused);
//! ```
//!
//! `vmaxps acc, acc, x` returns `x` when either is NaN, as onnxruntime's
//! `_mm_max_ps(acc, x)`; signs of equal zeros may differ from Cranelift's
//! `fmax`.

use super::{off, z, AsmError};
use iced_x86::code_asm::*;

/// Output rows `[o_lo, o_hi)` whose valid vertical taps are `[t_lo, t_hi)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowRun {
    pub o_lo: usize,
    pub o_hi: usize,
    pub t_lo: usize,
    pub t_hi: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub dil: [usize; 2],
    pub pad: [usize; 2],
    pub runs: Vec<RowRun>,
}

impl MaxPool {
    /// Column stride 1 or 2, no empty windows, moderate code size.
    pub fn supported(&self) -> bool {
        let wins_ok = (0..self.ow).all(|o| {
            (0..self.k[1]).any(|t| {
                let iw = (o * self.stride[1] + t * self.dil[1]) as i64 - self.pad[1] as i64;
                (0..self.w as i64).contains(&iw)
            })
        });
        (1..=2).contains(&self.stride[1])
            && self.stride[0] >= 1
            && wins_ok
            && self.runs.iter().all(|r| r.t_lo < r.t_hi && r.o_lo < r.o_hi)
            && self.runs.len() * self.ow.div_ceil(16) * self.k[0] * self.k[1] <= 4096
    }
}

const NEG_INF: usize = 31;
const EVEN_IDX: usize = 30;

pub fn assemble(g: &MaxPool) -> Result<Vec<u8>, String> {
    if !g.supported() {
        return Err("unsupported max pool".into());
    }
    gen(g).map_err(|e| e.0)
}

/// Lane mask of `bits` (≤ 16) valid positions.
fn set_mask(a: &mut CodeAssembler, kr: AsmRegisterK, m: u32) -> Result<(), AsmError> {
    a.mov(eax, m)?;
    a.kmovw(kr, eax)?;
    Ok(())
}

/// Loads 16 elements at element offset `at` from r9, lanes in `m` valid
/// (others −inf), into `dst`.
fn load(
    a: &mut CodeAssembler,
    dst: AsmRegisterZmm,
    at: i64,
    m: u32,
    kr: AsmRegisterK,
) -> Result<(), AsmError> {
    let d = i32::try_from(at * 4).map_err(|_| AsmError("offset exceeds 2 GiB".into()))?;
    if m == 0xffff {
        a.vmovups(dst, zmmword_ptr(r9 + d))?;
    } else {
        a.vmovaps(dst, z(NEG_INF))?;
        if m != 0 {
            set_mask(a, kr, m)?;
            let x = if kr == k2 { dst.k2() } else { dst.k3() };
            a.vmovups(x, zmmword_ptr(r9 + d))?;
        }
    }
    Ok(())
}

fn gen(g: &MaxPool) -> Result<Vec<u8>, AsmError> {
    let mut a = CodeAssembler::new(64)?;
    let mut l_idx = a.create_label();
    let mut l_odd = a.create_label();
    let mut end = a.create_label();
    let mut top = a.create_label();
    let (sh, sw) = (g.stride[0], g.stride[1]);
    a.test(rdx, rdx)?;
    a.je(end)?;
    a.mov(eax, f32::NEG_INFINITY.to_bits())?;
    a.vpbroadcastd(z(NEG_INF), eax)?;
    if sw == 2 {
        a.vmovups(z(EVEN_IDX), zmmword_ptr(l_idx))?;
    }
    a.set_label(&mut top)?;
    let nvec = g.ow.div_ceil(16);
    for run in &g.runs {
        let ih0 = (run.o_lo * sh) as i64 - g.pad[0] as i64;
        a.lea(
            r9,
            ptr(rdi + i32::try_from(ih0 * g.w as i64 * 4).map_err(|_| AsmError("offset".into()))?),
        )?;
        a.lea(r10, ptr(rsi + off(run.o_lo * g.ow)?))?;
        a.mov(r8d, (run.o_hi - run.o_lo) as u32)?;
        let mut lr = a.create_label();
        a.set_label(&mut lr)?;
        for v in 0..nvec {
            let lanes = (g.ow - v * 16).min(16);
            let acc = z(v % 14);
            let tmp = z(14 + v % 14);
            let tmp2 = z(28 + v % 2);
            let paired = pairs(g);
            if paired {
                pair_vector(&mut a, g, run, v, lanes, acc, tmp, l_odd)?;
            }
            let mut first = !paired;
            for th in (run.t_lo..run.t_hi).filter(|_| !paired) {
                let row = (th * g.dil[0] * g.w) as i64;
                for tw in 0..g.k[1] {
                    let iw0 = (v * 16 * sw + tw * g.dil[1]) as i64 - g.pad[1] as i64;
                    // Valid element positions e (input column iw0 + e).
                    let valid = |e: usize| {
                        let iw = iw0 + e as i64;
                        e / sw < lanes && iw >= 0 && iw < g.w as i64
                    };
                    let mask = |from: usize| -> u32 {
                        (0..16)
                            .filter(|&l| valid(from + l))
                            .map(|l| 1u32 << l)
                            .sum()
                    };
                    let dst = if first { acc } else { tmp };
                    if sw == 1 {
                        let m = mask(0);
                        if m == 0 {
                            continue;
                        }
                        load(&mut a, dst, row + iw0, m, k2)?;
                    } else {
                        let (m0, m1) = (mask(0), mask(16));
                        if m0 == 0 && m1 == 0 {
                            continue;
                        }
                        load(&mut a, dst, row + iw0, m0, k2)?;
                        load(&mut a, tmp2, row + iw0 + 16, m1, k3)?;
                        a.vpermt2ps(dst, z(EVEN_IDX), tmp2)?;
                    }
                    if !first {
                        a.vmaxps(acc, acc, tmp)?;
                    }
                    first = false;
                }
            }
            if first {
                a.vmovaps(acc, z(NEG_INF))?;
            }
            let dst = zmmword_ptr(r10 + off(v * 16)?);
            if lanes == 16 {
                a.vmovups(dst, acc)?;
            } else {
                set_mask(&mut a, k1, (1u32 << lanes) - 1)?;
                a.vmovups(dst.k1(), acc)?;
            }
        }
        a.add(r9, off(sh * g.w)?)?;
        a.add(r10, off(g.ow)?)?;
        a.dec(r8d)?;
        a.jne(lr)?;
    }
    a.add(rdi, off(g.h * g.w)?)?;
    a.add(rsi, off(g.oh * g.ow)?)?;
    a.dec(rdx)?;
    a.jne(top)?;
    a.set_label(&mut end)?;
    a.vzeroupper()?;
    a.ret()?;
    a.set_label(&mut l_idx)?;
    let idx: Vec<u32> = (0..16).map(|i| 2 * i).collect();
    a.dd(&idx)?;
    a.set_label(&mut l_odd)?;
    let idx: Vec<u32> = (0..16).map(|i| 2 * i + 1).collect();
    a.dd(&idx)?;
    Ok(a.assemble(0)?)
}

/// Two adjacent columns per output (kernel width 2, column stride 2,
/// dilation 1: the 2×2/s2 pool of CNNs): each output's taps lie in one
/// 32-element input span, so the vertical taps are reduced on the raw span
/// first and the even and odd elements are picked once (two permutes per
/// 16 outputs instead of one per tap).
fn pairs(g: &MaxPool) -> bool {
    g.k[1] == 2 && g.stride[1] == 2 && g.dil[1] == 1
}

/// Output vector `v` of a row of `run` into `acc` (see [`pairs`]).
#[allow(clippy::too_many_arguments)]
fn pair_vector(
    a: &mut CodeAssembler,
    g: &MaxPool,
    run: &RowRun,
    v: usize,
    lanes: usize,
    acc: AsmRegisterZmm,
    hi: AsmRegisterZmm,
    l_odd: CodeLabel,
) -> Result<(), AsmError> {
    let iw0 = (v * 32) as i64 - g.pad[1] as i64;
    // Element e of the span (input column iw0 + e) feeds output lane e / 2.
    let mask = |from: usize| -> u32 {
        (0..16)
            .filter(|&l| {
                let (e, iw) = (from + l, iw0 + (from + l) as i64);
                e / 2 < lanes && iw >= 0 && iw < g.w as i64
            })
            .map(|l| 1u32 << l)
            .sum()
    };
    let (m0, m1) = (mask(0), mask(16));
    let (t0, t1) = (z(28), z(29));
    for (i, th) in (run.t_lo..run.t_hi).enumerate() {
        let row = (th * g.dil[0] * g.w) as i64;
        let (lo_dst, hi_dst) = if i == 0 { (acc, hi) } else { (t0, t1) };
        load(a, lo_dst, row + iw0, m0, k2)?;
        load(a, hi_dst, row + iw0 + 16, m1, k3)?;
        if i > 0 {
            a.vmaxps(acc, acc, t0)?;
            a.vmaxps(hi, hi, t1)?;
        }
    }
    // odd elements into t0, even ones into acc, then their max
    a.vmovups(t0, zmmword_ptr(l_odd))?;
    a.vpermi2ps(t0, acc, hi)?;
    a.vpermt2ps(acc, z(EVEN_IDX), hi)?;
    a.vmaxps(acc, acc, t0)?;
    Ok(())
}
