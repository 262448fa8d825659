//! AVX-512 im2col that writes the GEMM's pre-packed B layout directly.
//!
//! The Cranelift im2col moved 128 bits at a time with per-row branches, and
//! the GEMM then copied its output again into a stack panel: for small
//! spatial sizes (MNIST's 11×11, ResNet's 7×7) both cost as much as the
//! multiply. Here one chunk of output rows is unfolded straight into NR-column
//! panels (K-major, tail zero-padded to whole vectors, exactly [`super::pack_b`]'s
//! layout), so the GEMM runs with `b_packed` and never packs.
//!
//! Everything but the channel count is static: each 16-lane output vector of
//! each tap is built from the few input row segments it spans with
//! merge-masked loads (masked-off lanes neither fault nor read), and lanes in
//! the padding stay zero. Output-row validity is passed in per chunk (first,
//! interior and last chunks differ only there), so one function serves every
//! chunk with the same pattern. Only unit column stride (contiguous segments).
//!
//! ```text
//! void f(const float* x, float* col, float* col_tail, size_t channels);
//! ```
//! `x`: channel 0 at the chunk's first output row (`x + r0·stride_h·W`);
//! `col`: the full panels; `col_tail`: the tail panel; both for channel 0.

use super::{disp, off, z, AsmError};
use iced_x86::code_asm::*;

/// One chunk of an im2col, all sizes in f32 elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Im2col {
    /// Input row width and plane size (H·W).
    pub w: usize,
    pub plane: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    /// Column stride: 1, or 2 (pairs of loads and an even-lane `vpermt2ps`).
    pub stride_w: usize,
    pub dil: [usize; 2],
    pub pad: [usize; 2],
    /// Output rows in the chunk and their width.
    pub rows: usize,
    pub ow: usize,
    /// `row_ok[rr·kh + t]`: output row `rr` of the chunk reads an input row
    /// (not padding) at vertical tap `t`.
    pub row_ok: Vec<bool>,
    /// Panel width (columns, a multiple of 16).
    pub nr: usize,
    /// GEMM K (all channels × taps): full panels are `nr·k` apart.
    pub k: usize,
}

/// Unrolled vectors above which a chunk is not assembled (code size;
/// ResNet's 7×7 stem chunk has 4802, ~170 KiB, still faster than the
/// Cranelift im2col plus runtime packing).
pub const MAX_VECTORS: usize = 8192;

impl Im2col {
    pub fn n(&self) -> usize {
        self.rows * self.ow
    }

    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Full panels and the tail panel's padded width.
    pub fn panels(&self) -> (usize, usize) {
        let n = self.n();
        (n / self.nr, (n % self.nr).div_ceil(16) * 16)
    }

    /// Vector stores per channel.
    pub fn vectors(&self) -> usize {
        self.n().div_ceil(16) * self.taps()
    }
}

/// A run of lanes `[l0, l1)` loaded from `x + src` (element offset of lane `l0`).
struct Seg {
    l0: usize,
    l1: usize,
    src: i64,
}

/// The input segments of the 16 output columns from `j0` at tap (t, u).
fn segments(g: &Im2col, j0: usize, t: usize, u: usize) -> Vec<Seg> {
    let n = g.n();
    let mut segs: Vec<Seg> = Vec::new();
    for l in 0..16 {
        let j = j0 + l;
        if j >= n {
            break;
        }
        let (rr, o) = (j / g.ow, j % g.ow);
        if !g.row_ok[rr * g.kh + t] {
            continue;
        }
        let iw = (o * g.stride_w + u * g.dil[1]) as i64 - g.pad[1] as i64;
        if iw < 0 || iw >= g.w as i64 {
            continue;
        }
        let ih = (rr * g.stride_h + t * g.dil[0]) as i64 - g.pad[0] as i64;
        let src = ih * g.w as i64 + iw;
        match segs.last_mut() {
            Some(s) if s.l1 == l && s.src + ((l - s.l0) * g.stride_w) as i64 == src => s.l1 = l + 1,
            _ => segs.push(Seg {
                l0: l,
                l1: l + 1,
                src,
            }),
        }
    }
    segs
}

/// Assembles the chunk's im2col.
pub fn assemble(g: &Im2col) -> Result<Vec<u8>, String> {
    gen(g).map_err(|e| e.0)
}

fn gen(g: &Im2col) -> Result<Vec<u8>, AsmError> {
    if g.nr == 0
        || !g.nr.is_multiple_of(16)
        || g.row_ok.len() != g.rows * g.kh
        || !(1..=2).contains(&g.stride_w)
    {
        return Err(AsmError("bad im2col spec".into()));
    }
    let mut a = CodeAssembler::new(64)?;
    let taps = g.taps();
    let (full, wt) = g.panels();
    let k_full = g.nr; // row stride within a full panel
    let mut end = a.create_label();
    let mut top = a.create_label();
    a.test(rcx, rcx)?;
    a.je(end)?;
    a.vpxord(z(31), z(31), z(31))?;
    let mut l_idx = a.create_label();
    if g.stride_w == 2 {
        a.vmovups(z(30), zmmword_ptr(l_idx))?;
    }
    a.set_label(&mut top)?;
    // Masks currently in k2..k7 (valid within one iteration of the body).
    let mut kregs: Vec<(u16, usize)> = Vec::new();
    let mut next_k = 0usize;
    let mut reg = 0usize;
    // Column vectors outermost: away from the padding a vector's lane
    // masks are the same for every tap, so they stay in the k registers.
    for j0 in (0..g.n()).step_by(16) {
        for t in 0..g.kh {
            for u in 0..g.kw {
                let tap = t * g.kw + u;
                let p = j0 / g.nr;
                // Element (row k, column j) of full panel p is at
                // p·NR·K + k·NR + j − p·NR; of the tail at k·wt + j − full·NR.
                let (base, at) = if p < full {
                    let pk = (p * g.nr * g.k) as i64;
                    (rsi, pk + (tap * k_full + j0 % g.nr) as i64)
                } else {
                    (rdx, (tap * wt + j0 % g.nr) as i64)
                };
                let segs = segments(g, j0, t, u);
                let x = if segs.is_empty() {
                    z(31)
                } else {
                    let x = z(reg % 8);
                    reg += 1;
                    let mut kmask = |a: &mut CodeAssembler, mask: u16| -> Result<usize, AsmError> {
                        Ok(match kregs.iter().find(|e| e.0 == mask) {
                            Some(&(_, r)) => r,
                            None => {
                                let r = next_k % 6;
                                next_k += 1;
                                kregs.retain(|e| e.1 != r);
                                kregs.push((mask, r));
                                a.mov(eax, mask as u32)?;
                                a.kmovw(kreg(r), eax)?;
                                r
                            }
                        })
                    };
                    let whole = segs.len() == 1 && segs[0].l0 == 0 && segs[0].l1 == 16;
                    if g.stride_w == 2 {
                        // Lane l of a segment is element 2(l − l0) of the
                        // 32 from its start: load both halves (only the
                        // needed elements), keep the even ones, merge.
                        if !whole {
                            a.vpxord(x, x, x)?;
                        }
                        for s in &segs {
                            let (lo, hi) = (z(8 + reg % 8), z(16 + reg % 8));
                            let mut mlo = 0u16;
                            let mut mhi = 0u16;
                            for l in s.l0..s.l1 {
                                let e = 2 * l;
                                if e < 16 {
                                    mlo |= 1 << e;
                                } else {
                                    mhi |= 1 << (e - 16);
                                }
                            }
                            let start = s.src - 2 * s.l0 as i64;
                            let dst_lo = if whole { x } else { lo };
                            for (m, r, d) in [(mlo, dst_lo, 0), (mhi, hi, 16)] {
                                if m == 0 {
                                    a.vpxord(r, r, r)?;
                                } else {
                                    let kr = kmask(&mut a, m)?;
                                    let mem = zmmword_ptr(rdi + disp(start + d)?);
                                    a.vmovups(with_k(r, kr).z(), mem)?;
                                }
                            }
                            a.vpermt2ps(dst_lo, z(30), hi)?;
                            if !whole {
                                let lanes = (((1u32 << (s.l1 - s.l0)) - 1) << s.l0) as u16;
                                let kr = kmask(&mut a, lanes)?;
                                a.vmovaps(with_k(x, kr), lo)?;
                            }
                        }
                    } else if whole {
                        a.vmovups(x, zmmword_ptr(rdi + disp(segs[0].src)?))?;
                    } else {
                        for (i, s) in segs.iter().enumerate() {
                            let mask = (((1u32 << (s.l1 - s.l0)) - 1) << s.l0) as u16;
                            let kr = kmask(&mut a, mask)?;
                            let m = zmmword_ptr(rdi + disp(s.src - s.l0 as i64)?);
                            if i == 0 {
                                a.vmovups(with_k(x, kr).z(), m)?;
                            } else {
                                a.vmovups(with_k(x, kr), m)?;
                            }
                        }
                    }
                    x
                };
                let dst = zmmword_ptr(base + disp(at)?);
                a.vmovups(dst, x)?;
            }
        }
    }
    a.add(rdi, off(g.plane)?)?;
    a.add(rsi, off(taps * k_full)?)?;
    if wt > 0 {
        a.add(rdx, off(taps * wt)?)?;
    }
    a.dec(rcx)?;
    a.jne(top)?;
    a.set_label(&mut end)?;
    a.vzeroupper()?;
    a.ret()?;
    a.set_label(&mut l_idx)?;
    let idx: Vec<u32> = (0..16).map(|i| 2 * i).collect();
    a.dd(&idx)?;
    Ok(a.assemble(0)?)
}

fn kreg(r: usize) -> AsmRegisterK {
    [k2, k3, k4, k5, k6, k7][r]
}

fn with_k(x: AsmRegisterZmm, r: usize) -> AsmRegisterZmm {
    match r {
        0 => x.k2(),
        1 => x.k3(),
        2 => x.k4(),
        3 => x.k5(),
        4 => x.k6(),
        _ => x.k7(),
    }
}
