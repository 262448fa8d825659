//! AVX-512 input and output transforms of Winograd F(2×2, 3×3) convolution.
//!
//! A 3×3 stride-1 convolution becomes, per chunk of output tile rows, 16
//! GEMMs `M_ξ = U_ξ · V_ξ` (ξ = 4a+b, the 16 positions of the 4×4 transform):
//! `U_ξ` (out × in channels) is the weight transform, computed at compile
//! time; the two kernels here produce `V_ξ` from the input and the output
//! from the `M_ξ`. A tile (ty, tx) covers output rows 2ty, 2ty+1 and
//! columns 2tx, 2tx+1 and reads the 4×4 input patch `d` at input rows
//! 2ty−pad_h+r, columns 2tx−pad_w+c (zeros outside the input); a chunk is
//! `tr` tile rows of `tw` tiles, its tile j = rr·tw + tx.
//!
//! Input transform, V = Bᵀ·d·B with Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]],
//! written straight into the assembled GEMM's pre-packed B layout
//! ([`super::pack_b`] with N = np: NR-column panels, each K-major), so the
//! 16 GEMMs run with `b_packed` and never pack:
//!
//! ```text
//! void f(const float* x, float* v, const void*, const void*);
//! v[ξ·S + (j/nr)·nr·C + ci·nr + j%nr] = V_ξ(ci, j)   (0.0 for j ≥ tr·tw; S = xi_stride ≥ np·C)
//! ```
//!
//! Output transform, Y = Aᵀ·M·A with Aᵀ = [[1,1,1,0],[0,1,−1,−1]], and the
//! conv epilogue (bias, residual addend, relu, or a fused 2×2 max pool):
//!
//! ```text
//! void f(const float* m, float* y, const float* bias, const void*);
//! m[ξ·S + co·np + j] = M_ξ(co, j)   (S = xi_stride ≥ C·np)
//! ```
//!
//! # Schedule
//!
//! Only data is dynamic. Both kernels unroll, at assembly time, one block
//! per vector of 16 consecutive chunk columns j (tiles), and inside it a
//! run-time loop over the channels, so the block's lane masks are set once
//! in k1..k7 (more than 7 happen only for narrow tile rows, where each use
//! sets its mask in the loop). Vectors of j, not of tx: their V stores are
//! whole 64-byte lines (nr is a multiple of 16: no vector crosses a panel),
//! as are the M loads when np is. (Per tile row 16-tile groups instead
//! wrote most lines in two pieces from two blocks, each piece refetching
//! the line: the 16 ξ lines of a channel share an L1 set, the ξ planes
//! being a multiple of 4 KiB apart; ~15% slower on ResNet's layer-1
//! chunk.) A vector spans segments of consecutive tiles of up to
//! ⌈16/tw⌉+1 tile rows; each segment brings its own input or output rows
//! through disjoint lane masks.
//!
//! Input: patch column c of lane l is element 2l+c of a virtual 32-element
//! window per patch row: c = 0, 1 the even/odd lanes of the window from
//! column 2tx−pad_w, c = 2, 3 of the one from 2tx−pad_w+2, each built from
//! a zero-masked load per segment and half (merge-masked for the next
//! segments; masked-off lanes neither fault nor read, so row ends, padding
//! columns, lanes past the chunk and rows outside the input read nothing)
//! and split by two `vpermt2ps`. Then rows and columns are combined (32
//! add/sub) and the 16 vectors stored whole: lanes past the chunk saw only
//! zeros, so padding columns come out exactly 0.0; the vectors past the
//! last tile get zero stores (the GEMM multiplies them: garbage there
//! could be NaN).
//!
//! Output: per vector and channel 16 masked loads (12 when no tile has a
//! second output row), 24 add/sub, the bias added to the 2×2 results, then
//! per output row `vpermt2ps` interleaves Y_a0 and Y_a1 into 32 output
//! columns, stored per segment under masks for the row end (an accumulated
//! addend is read under the same masks). With the pool the four results
//! are `vmaxps`ed into one vector, stored per segment.

use super::{disp, off, z, AsmError};
use iced_x86::code_asm::*;

/// Input transform of one chunk, written as 16 GEMM B operands in the
/// assembled GEMM's pre-packed layout (see [`super::pack_b`]: NR-column
/// panels, each K-major). All sizes in f32 elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WinoIn {
    /// Input row width W.
    pub w: usize,
    /// Input channel stride (H·W).
    pub plane: usize,
    /// Begin padding of the columns.
    pub pad_w: usize,
    /// Tiles per tile row.
    pub tw: usize,
    /// Tile rows in the chunk.
    pub tr: usize,
    /// `row_ok[rr·4 + r]`: tile row `rr` of the chunk reads a real input row
    /// at patch row `r` (else zeros; that row is never read).
    pub row_ok: Vec<bool>,
    /// Input channels (GEMM K).
    pub channels: usize,
    /// Panel width, a multiple of 16.
    pub nr: usize,
    /// Padded column count: a multiple of `nr`, ≥ tr·tw.
    pub np: usize,
    /// Elements between the ξ planes of `v` (≥ np·channels). A few cache
    /// lines more than that keeps a channel's 16 stores out of one L1 set
    /// (planes a multiple of 4 KiB apart all map to the same set).
    pub xi_stride: usize,
}

/// Output transform of one chunk from the 16 GEMM products, with the conv
/// epilogue. All sizes in f32 elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WinoOut {
    /// Output channels (GEMM M).
    pub channels: usize,
    /// Row stride of each product.
    pub np: usize,
    /// Product ξ starts at ξ·xi_stride (≥ channels·np; see [`WinoIn::xi_stride`]).
    pub xi_stride: usize,
    pub tw: usize,
    pub tr: usize,
    /// Output row width (the conv output width; the pooled width, ≥ tw,
    /// with `pool`).
    pub ow: usize,
    /// Output channel stride.
    pub plane: usize,
    /// `row2_ok[rr]`: output row 2(ty0+rr)+1 exists (else only the first row
    /// of the tile row is written). All true with `pool`.
    pub row2_ok: Vec<bool>,
    /// Add `bias[co]` (third argument).
    pub bias: bool,
    /// `y` already holds an addend (fused residual): y = y + result.
    pub accumulate: bool,
    pub relu: bool,
    /// Fused 2×2 stride-2 max pool: one value per tile,
    /// relu?(max(Y00, Y01, Y10, Y11) + bias). Not with `accumulate`.
    pub pool: bool,
}

/// Assembles the input transform of `g`.
pub fn assemble_in(g: &WinoIn) -> Result<Vec<u8>, String> {
    gen_in(g).map_err(|e| e.0)
}

/// Assembles the output transform of `g`.
pub fn assemble_out(g: &WinoOut) -> Result<Vec<u8>, String> {
    gen_out(g).map_err(|e| e.0)
}

// ---------------------------------------------------------------------------
// Registers, masks, helpers.

/// Always zero.
const ZERO: usize = 31;
/// Permute indices: even/odd lanes (input), interleave low/high (output).
const IDX_A: usize = 30;
const IDX_B: usize = 29;
/// The broadcast bias of the current channel (output).
const BIAS: usize = 28;
/// zmm0..zmm27 hold values.
const POOL: usize = 28;

/// Free value registers: values are put back at their last use; the
/// permanent registers (`ZERO`, ...) are never pooled.
struct Regs(Vec<usize>);

impl Regs {
    fn new() -> Self {
        Regs((0..POOL).rev().collect())
    }

    fn take(&mut self) -> Result<usize, AsmError> {
        self.0
            .pop()
            .ok_or_else(|| AsmError("winograd: out of zmm registers".into()))
    }

    fn put(&mut self, r: usize) {
        if r < POOL {
            self.0.push(r);
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Max,
}

/// `x op y` into a new register (both `ZERO`: `ZERO`, no code); the
/// operands stay live.
fn op(a: &mut CodeAssembler, r: &mut Regs, o: Op, x: usize, y: usize) -> Result<usize, AsmError> {
    if x == ZERO && y == ZERO {
        return Ok(ZERO);
    }
    let d = r.take()?;
    match o {
        Op::Add => a.vaddps(z(d), z(x), z(y))?,
        Op::Sub => a.vsubps(z(d), z(x), z(y))?,
        Op::Max => a.vmaxps(z(d), z(x), z(y))?,
    }
    Ok(d)
}

/// A lane mask at its use: `Full` needs no opmask, `K(k)` is in `k{k}`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mask {
    Full,
    K(usize),
}

/// Opmask allocation of one block. The body is emitted once in `Collect`
/// mode (into a scratch assembler) to learn its distinct masks: up to 7
/// are set in k1..k7 before the channel loop (`Hoisted`, the usual case);
/// more (narrow tile rows: many segments) are set in the body before use
/// (`OnDemand`, round-robin, state assumed unknown at the body's start).
enum Kcache {
    Collect(Vec<u16>),
    Hoisted(Vec<u16>),
    OnDemand {
        resident: Vec<(u16, usize)>,
        next: usize,
    },
}

impl Kcache {
    /// `bits` (non-zero) as a mask usable by the next instruction.
    fn mask(&mut self, a: &mut CodeAssembler, bits: u32) -> Result<Mask, AsmError> {
        debug_assert!(bits != 0 && bits <= 0xffff);
        let bits = bits as u16;
        if bits == 0xffff {
            return Ok(Mask::Full);
        }
        Ok(match self {
            Kcache::Collect(v) => {
                if !v.contains(&bits) {
                    v.push(bits);
                }
                Mask::K(1)
            }
            Kcache::Hoisted(v) => {
                let i = v.iter().position(|&b| b == bits).expect("collected mask");
                Mask::K(i + 1)
            }
            Kcache::OnDemand { resident, next } => match resident.iter().find(|e| e.0 == bits) {
                Some(&(_, k)) => Mask::K(k),
                None => {
                    let k = *next % 7 + 1;
                    *next += 1;
                    resident.retain(|e| e.1 != k);
                    resident.push((bits, k));
                    a.mov(eax, bits as u32)?;
                    a.kmovw(kreg(k), eax)?;
                    Mask::K(k)
                }
            },
        })
    }
}

fn kreg(k: usize) -> AsmRegisterK {
    [k0, k1, k2, k3, k4, k5, k6, k7][k]
}

fn zk(x: AsmRegisterZmm, k: usize) -> AsmRegisterZmm {
    match k {
        1 => x.k1(),
        2 => x.k2(),
        3 => x.k3(),
        4 => x.k4(),
        5 => x.k5(),
        6 => x.k6(),
        _ => x.k7(),
    }
}

fn mk(m: AsmMemoryOperand, k: usize) -> AsmMemoryOperand {
    match k {
        1 => m.k1(),
        2 => m.k2(),
        3 => m.k3(),
        4 => m.k4(),
        5 => m.k5(),
        6 => m.k6(),
        _ => m.k7(),
    }
}

/// Loads `bits` lanes from `base + at` (elements) into `x`: zeroing the
/// other lanes when `first`, else merging into it.
fn load(
    a: &mut CodeAssembler,
    kc: &mut Kcache,
    x: usize,
    base: AsmRegister64,
    at: i64,
    bits: u32,
    first: bool,
) -> Result<(), AsmError> {
    let mem = zmmword_ptr(base + disp(at)?);
    match kc.mask(a, bits)? {
        Mask::Full => a.vmovups(z(x), mem)?,
        Mask::K(k) if first => a.vmovups(zk(z(x), k).z(), mem)?,
        Mask::K(k) => a.vmovups(zk(z(x), k), mem)?,
    }
    Ok(())
}

/// Stores the `bits` lanes of `x` at `base + at` (elements).
fn store(
    a: &mut CodeAssembler,
    kc: &mut Kcache,
    x: usize,
    base: AsmRegister64,
    at: i64,
    bits: u32,
) -> Result<(), AsmError> {
    let mem = zmmword_ptr(base + disp(at)?);
    match kc.mask(a, bits)? {
        Mask::Full => a.vmovups(mem, z(x))?,
        Mask::K(k) => a.vmovups(mk(mem, k), z(x))?,
    }
    Ok(())
}

/// Lane bits `l` in 0..16 with `f(l)`.
fn bits(f: impl Fn(usize) -> bool) -> u32 {
    (0..16).filter(|&l| f(l)).map(|l| 1u32 << l).sum()
}

/// Whether the product of `parts` elements is a valid byte displacement
/// (checked before any offset arithmetic, which then cannot overflow).
fn fits(parts: &[usize]) -> bool {
    parts
        .iter()
        .try_fold(4usize, |p, &x| p.checked_mul(x))
        .is_some_and(|b| b <= i32::MAX as usize)
}

/// Lanes `[l0, l1)` of a column vector: tiles `tx0 + (l − l0)` of tile row `rr`.
struct Seg {
    rr: usize,
    l0: usize,
    l1: usize,
    tx0: usize,
}

impl Seg {
    /// Tile column of lane `l` minus `l` (the same for the whole segment).
    fn shift(&self) -> i64 {
        self.tx0 as i64 - self.l0 as i64
    }
}

/// The tile-row segments of the 16 chunk columns from `j0` (< n).
fn segments(tw: usize, n: usize, j0: usize) -> Vec<Seg> {
    let mut segs: Vec<Seg> = Vec::new();
    for l in 0..16.min(n - j0) {
        let (rr, tx) = ((j0 + l) / tw, (j0 + l) % tw);
        match segs.last_mut() {
            Some(s) if s.rr == rr => s.l1 = l + 1,
            _ => segs.push(Seg {
                rr,
                l0: l,
                l1: l + 1,
                tx0: tx,
            }),
        }
    }
    segs
}

/// One unrolled block: its channel loop around `body`, each `(run, arg,
/// step)` pointer starting at its argument register and advancing `step`
/// bytes per channel, with the body's opmasks hoisted when they fit.
fn block(
    a: &mut CodeAssembler,
    channels: u32,
    ptrs: &[(AsmRegister64, AsmRegister64, i32)],
    body: &dyn Fn(&mut CodeAssembler, &mut Kcache) -> Result<(), AsmError>,
) -> Result<(), AsmError> {
    let mut kc = Kcache::Collect(Vec::new());
    body(&mut CodeAssembler::new(64)?, &mut kc)?;
    let Kcache::Collect(masks) = kc else {
        unreachable!()
    };
    let hoist = masks.len() <= 7;
    if hoist {
        for (i, &b) in masks.iter().enumerate() {
            a.mov(eax, b as u32)?;
            a.kmovw(kreg(i + 1), eax)?;
        }
    }
    for &(run, arg, _) in ptrs {
        a.mov(run, arg)?;
    }
    a.mov(ecx, channels)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    let mut kc = if hoist {
        Kcache::Hoisted(masks)
    } else {
        Kcache::OnDemand {
            resident: Vec::new(),
            next: 0,
        }
    };
    body(a, &mut kc)?;
    for &(run, _, step) in ptrs {
        a.add(run, step)?;
    }
    a.dec(ecx)?;
    a.jne(top)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Input transform.

fn gen_in(g: &WinoIn) -> Result<Vec<u8>, AsmError> {
    // Sizes small enough for the unchecked arithmetic below.
    if !fits(&[g.tr.max(1), g.tw.max(1), 8]) || !fits(&[g.w, 8]) || !fits(&[g.pad_w, 8]) {
        return Err(AsmError("winograd in: sizes exceed 2 GiB".into()));
    }
    let n = g.tr * g.tw;
    if g.nr == 0 || !g.nr.is_multiple_of(16) {
        return Err(AsmError(
            "winograd in: nr must be a positive multiple of 16".into(),
        ));
    }
    if !g.np.is_multiple_of(g.nr) || g.np < n {
        return Err(AsmError(
            "winograd in: np must be a multiple of nr, ≥ tr·tw".into(),
        ));
    }
    if g.xi_stride < g.np * g.channels {
        return Err(AsmError("winograd in: xi_stride below np·channels".into()));
    }
    if g.row_ok.len() != g.tr * 4 || g.w == 0 {
        return Err(AsmError(
            "winograd in: row_ok must have tr·4 entries, w > 0".into(),
        ));
    }
    let channels =
        u32::try_from(g.channels).map_err(|_| AsmError("winograd in: channels".into()))?;
    // Bounds of every offset below (each displacement is checked again).
    if !fits(&[17, g.np.max(1), g.channels.max(1)])
        || !fits(&[17, g.xi_stride.max(1)])
        || !fits(&[2 * g.tr + 4 + g.pad_w, g.w + 2 * g.tw + 34])
        || !fits(&[g.plane])
    {
        return Err(AsmError("winograd in: offsets exceed 2 GiB".into()));
    }
    let ptrs = [(r8, rdi, off(g.plane)?), (r9, rsi, off(g.nr)?)];

    let mut a = CodeAssembler::new(64)?;
    let mut l_even = a.create_label();
    let mut l_odd = a.create_label();
    if channels > 0 {
        a.vpxord(z(ZERO), z(ZERO), z(ZERO))?;
        a.vmovups(z(IDX_A), zmmword_ptr(l_even))?;
        a.vmovups(z(IDX_B), zmmword_ptr(l_odd))?;
        for j0 in (0..n).step_by(16) {
            block(&mut a, channels, &ptrs, &|a, kc| in_vector(a, kc, g, j0))?;
        }
        // Padding vectors past the last partial one (whose padding lanes
        // are computed from zeros: exactly 0.0).
        let pad: Vec<usize> = (n.div_ceil(16) * 16..g.np).step_by(16).collect();
        if !pad.is_empty() {
            block(&mut a, channels, &ptrs[1..], &|a, kc| {
                for xi in 0..16 {
                    for &j in &pad {
                        store(a, kc, ZERO, r9, v_at(g, xi, j), 0xffff)?;
                    }
                }
                Ok(())
            })?;
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    a.set_label(&mut l_even)?;
    a.dd(&(0..16).map(|i| 2 * i).collect::<Vec<u32>>())?;
    a.set_label(&mut l_odd)?;
    a.dd(&(0..16).map(|i| 2 * i + 1).collect::<Vec<u32>>())?;
    Ok(a.assemble(0)?)
}

/// Element offset in `v` (channel 0) of column `j` of product ξ.
fn v_at(g: &WinoIn, xi: usize, j: usize) -> i64 {
    (xi * g.xi_stride + (j / g.nr) * g.nr * g.channels + j % g.nr) as i64
}

/// One channel of the 16 columns from `j0`.
fn in_vector(
    a: &mut CodeAssembler,
    kc: &mut Kcache,
    g: &WinoIn,
    j0: usize,
) -> Result<(), AsmError> {
    let segs = segments(g.tw, g.tr * g.tw, j0);
    let mut regs = Regs::new();
    // d[r][c]: patch element (r, c) of the 16 tiles.
    let mut d = [[ZERO; 4]; 4];
    for (r, dr) in d.iter_mut().enumerate() {
        // Columns (c0, c0+1) are the even and odd lanes of the 32-element
        // window whose element i, in segment s, is input column
        // 2·shift + i + c0 − pad_w of patch row r of tile row s.rr.
        for c0 in [0, 2] {
            let mut halves = [ZERO; 2];
            for (h, x) in halves.iter_mut().enumerate() {
                for s in segs.iter().filter(|s| g.row_ok[s.rr * 4 + r]) {
                    let col0 = 2 * s.shift() + c0 as i64 - g.pad_w as i64;
                    let m = bits(|l| {
                        let i = 16 * h + l;
                        let col = col0 + i as i64;
                        (s.l0..s.l1).contains(&(i / 2)) && (0..g.w as i64).contains(&col)
                    });
                    if m == 0 {
                        continue;
                    }
                    let at = ((2 * s.rr + r) * g.w) as i64 + col0 + 16 * h as i64;
                    let first = *x == ZERO;
                    if first {
                        *x = regs.take()?;
                    }
                    load(a, kc, *x, r8, at, m, first)?;
                }
            }
            let [e, t] = halves;
            if e == ZERO && t == ZERO {
                continue;
            }
            let e = if e == ZERO { regs.take()? } else { e };
            let o = regs.take()?;
            if halves[0] == ZERO {
                a.vpxord(z(e), z(e), z(e))?;
                a.vpxord(z(o), z(o), z(o))?;
            } else {
                a.vmovaps(z(o), z(e))?;
            }
            a.vpermt2ps(z(e), z(IDX_A), z(t))?;
            a.vpermt2ps(z(o), z(IDX_B), z(t))?;
            regs.put(t);
            dr[c0] = e;
            dr[c0 + 1] = o;
        }
    }
    // Rows: t = Bᵀ·d.
    let mut t = [[ZERO; 4]; 4];
    for c in 0..4 {
        let [x0, x1, x2, x3] = [d[0][c], d[1][c], d[2][c], d[3][c]];
        t[0][c] = op(a, &mut regs, Op::Sub, x0, x2)?;
        t[1][c] = op(a, &mut regs, Op::Add, x1, x2)?;
        t[2][c] = op(a, &mut regs, Op::Sub, x2, x1)?;
        t[3][c] = op(a, &mut regs, Op::Sub, x1, x3)?;
        for x in [x0, x1, x2, x3] {
            regs.put(x);
        }
    }
    // Columns: V = t·B, each stored whole (lanes past the chunk were
    // computed from zeros).
    for (k, tk) in t.iter().enumerate() {
        let v = [
            op(a, &mut regs, Op::Sub, tk[0], tk[2])?,
            op(a, &mut regs, Op::Add, tk[1], tk[2])?,
            op(a, &mut regs, Op::Sub, tk[2], tk[1])?,
            op(a, &mut regs, Op::Sub, tk[1], tk[3])?,
        ];
        for &x in tk {
            regs.put(x);
        }
        for (c, &x) in v.iter().enumerate() {
            store(a, kc, x, r9, v_at(g, 4 * k + c, j0), 0xffff)?;
            regs.put(x);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Output transform.

fn gen_out(g: &WinoOut) -> Result<Vec<u8>, AsmError> {
    if !fits(&[g.tr.max(1), g.tw.max(1), 8]) || !fits(&[g.ow, 8]) {
        return Err(AsmError("winograd out: sizes exceed 2 GiB".into()));
    }
    let n = g.tr * g.tw;
    if g.np < n || g.row2_ok.len() != g.tr || g.xi_stride < g.channels * g.np {
        return Err(AsmError(
            "winograd out: np must be ≥ tr·tw, row2_ok tr entries, xi_stride ≥ channels·np".into(),
        ));
    }
    if g.pool && (g.accumulate || g.ow < g.tw || g.row2_ok.iter().any(|&ok| !ok)) {
        return Err(AsmError(
            "winograd out: pool needs ow ≥ tw, whole tile rows, no accumulate".into(),
        ));
    }
    let channels =
        u32::try_from(g.channels).map_err(|_| AsmError("winograd out: channels".into()))?;
    if !fits(&[17, g.np.max(1), g.channels.max(1)])
        || !fits(&[17, g.xi_stride.max(1)])
        || !fits(&[2 * g.tr + 2, g.ow + 2 * g.tw + 32])
        || !fits(&[g.plane])
    {
        return Err(AsmError("winograd out: offsets exceed 2 GiB".into()));
    }
    let mut ptrs = vec![(r8, rdi, off(g.np)?), (r9, rsi, off(g.plane)?)];
    if g.bias {
        ptrs.push((r10, rdx, 4));
    }

    let mut a = CodeAssembler::new(64)?;
    let mut l_lo = a.create_label();
    let mut l_hi = a.create_label();
    if channels > 0 {
        a.vpxord(z(ZERO), z(ZERO), z(ZERO))?;
        if !g.pool {
            a.vmovups(z(IDX_A), zmmword_ptr(l_lo))?;
            a.vmovups(z(IDX_B), zmmword_ptr(l_hi))?;
        }
        for j0 in (0..n).step_by(16) {
            block(&mut a, channels, &ptrs, &|a, kc| out_vector(a, kc, g, j0))?;
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    // Output lane i is lane i/2 of Y_a0 (i even) or of Y_a1 (i odd, table 2).
    a.set_label(&mut l_lo)?;
    a.dd(&(0..16).map(|i| (i % 2) * 16 + i / 2).collect::<Vec<u32>>())?;
    a.set_label(&mut l_hi)?;
    a.dd(&(0..16)
        .map(|i| (i % 2) * 16 + 8 + i / 2)
        .collect::<Vec<u32>>())?;
    Ok(a.assemble(0)?)
}

/// One channel of the 16 columns from `j0`.
fn out_vector(
    a: &mut CodeAssembler,
    kc: &mut Kcache,
    g: &WinoOut,
    j0: usize,
) -> Result<(), AsmError> {
    let n = g.tr * g.tw;
    let segs = segments(g.tw, n, j0);
    let valid = bits(|l| j0 + l < n);
    // The second output row of some tile (always with the pool).
    let two = g.pool || segs.iter().any(|s| g.row2_ok[s.rr]);
    let mut regs = Regs::new();
    if g.bias {
        a.vbroadcastss(z(BIAS), dword_ptr(r10))?;
    }
    // m[r][c] = M_{4r+c} of the 16 tiles.
    let nrows = if two { 4 } else { 3 };
    let cnp = g.xi_stride as i64;
    let mut m = [[ZERO; 4]; 4];
    for (r, mr) in m.iter_mut().enumerate().take(nrows) {
        for (c, x) in mr.iter_mut().enumerate() {
            *x = regs.take()?;
            load(
                a,
                kc,
                *x,
                r8,
                (4 * r + c) as i64 * cnp + j0 as i64,
                valid,
                true,
            )?;
        }
    }
    // Rows: s = Aᵀ·M.
    let mut s = [[ZERO; 4]; 2];
    for c in 0..4 {
        let p = op(a, &mut regs, Op::Add, m[0][c], m[1][c])?;
        s[0][c] = op(a, &mut regs, Op::Add, p, m[2][c])?;
        regs.put(p);
        if two {
            let q = op(a, &mut regs, Op::Sub, m[1][c], m[2][c])?;
            s[1][c] = op(a, &mut regs, Op::Sub, q, m[3][c])?;
            regs.put(q);
        }
        for r in m.iter().take(nrows) {
            regs.put(r[c]);
        }
    }
    // Columns: Y = s·A.
    let mut y = [[ZERO; 2]; 2];
    for (ya, sa) in y.iter_mut().zip(&s).take(if two { 2 } else { 1 }) {
        let p = op(a, &mut regs, Op::Add, sa[0], sa[1])?;
        ya[0] = op(a, &mut regs, Op::Add, p, sa[2])?;
        let q = op(a, &mut regs, Op::Sub, sa[1], sa[2])?;
        ya[1] = op(a, &mut regs, Op::Sub, q, sa[3])?;
        for x in [p, q, sa[0], sa[1], sa[2], sa[3]] {
            regs.put(x);
        }
    }
    if g.pool {
        let p = op(a, &mut regs, Op::Max, y[0][0], y[0][1])?;
        let q = op(a, &mut regs, Op::Max, y[1][0], y[1][1])?;
        a.vmaxps(z(p), z(p), z(q))?;
        if g.bias {
            a.vaddps(z(p), z(p), z(BIAS))?;
        }
        if g.relu {
            a.vmaxps(z(p), z(p), z(ZERO))?;
        }
        // Lane l of segment s is pooled column shift + l of row s.rr.
        for s in &segs {
            let at = (s.rr * g.ow) as i64 + s.shift();
            store(a, kc, p, r9, at, bits(|l| (s.l0..s.l1).contains(&l)))?;
        }
        return Ok(());
    }
    for (ra, ya) in y.iter().enumerate().take(if two { 2 } else { 1 }) {
        // Interleaved lane i of half h is output column 2·shift + 16h + i of
        // row 2·s.rr + ra, for the tile lanes (16h + i)/2 of segment s.
        let stores: Vec<[(u32, i64); 2]> = segs
            .iter()
            .filter(|s| ra == 0 || g.row2_ok[s.rr])
            .map(|s| {
                let col0 = 2 * s.shift();
                let row = ((2 * s.rr + ra) * g.ow) as i64;
                [0, 1].map(|h| {
                    let m = bits(|i| {
                        let i = 16 * h + i;
                        (s.l0..s.l1).contains(&(i / 2)) && col0 + (i as i64) < g.ow as i64
                    });
                    (m, row + col0 + 16 * h as i64)
                })
            })
            .collect();
        if g.bias {
            for &x in ya {
                a.vaddps(z(x), z(x), z(BIAS))?;
            }
        }
        let hi = regs.take()?;
        let used = |h: usize| stores.iter().any(|st| st[h].0 != 0);
        if used(1) {
            a.vmovaps(z(hi), z(ya[0]))?;
            a.vpermt2ps(z(hi), z(IDX_B), z(ya[1]))?;
        }
        if used(0) {
            a.vpermt2ps(z(ya[0]), z(IDX_A), z(ya[1]))?;
        }
        for (h, x) in [ya[0], hi]
            .into_iter()
            .enumerate()
            .filter(|&(h, _)| used(h))
        {
            if g.accumulate {
                let old = regs.take()?;
                let mut first = true;
                for &(m, at) in stores.iter().map(|st| &st[h]).filter(|st| st.0 != 0) {
                    load(a, kc, old, r9, at, m, first)?;
                    first = false;
                }
                a.vaddps(z(x), z(x), z(old))?;
                regs.put(old);
            }
            if g.relu {
                a.vmaxps(z(x), z(x), z(ZERO))?;
            }
            for &(m, at) in stores.iter().map(|st| &st[h]).filter(|st| st.0 != 0) {
                store(a, kc, x, r9, at, m)?;
            }
        }
        for x in [ya[0], ya[1], hi] {
            regs.put(x);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in() -> WinoIn {
        WinoIn {
            w: 56,
            plane: 56 * 56,
            pad_w: 1,
            tw: 28,
            tr: 4,
            row_ok: vec![true; 16],
            channels: 64,
            nr: 32,
            np: 128,
            xi_stride: 128 * 64,
        }
    }

    fn spec_out() -> WinoOut {
        WinoOut {
            channels: 64,
            np: 128,
            xi_stride: 128 * 64,
            tw: 28,
            tr: 4,
            ow: 56,
            plane: 56 * 56,
            row2_ok: vec![true; 4],
            bias: true,
            accumulate: false,
            relu: true,
            pool: false,
        }
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(assemble_in(&spec_in()).is_ok());
        let bad_in = [
            WinoIn {
                nr: 24,
                ..spec_in()
            },
            WinoIn {
                np: 96,
                ..spec_in()
            },
            WinoIn {
                np: 112,
                ..spec_in()
            },
            WinoIn {
                row_ok: vec![true; 15],
                ..spec_in()
            },
            WinoIn {
                plane: 1 << 30,
                ..spec_in()
            },
            WinoIn {
                channels: 1 << 24,
                ..spec_in()
            },
            WinoIn {
                tw: usize::MAX / 2,
                ..spec_in()
            },
            WinoIn {
                w: usize::MAX,
                ..spec_in()
            },
        ];
        for g in &bad_in {
            assert!(assemble_in(g).is_err(), "{g:?}");
        }
        assert!(assemble_out(&spec_out()).is_ok());
        let bad_out = [
            WinoOut {
                np: 100,
                ..spec_out()
            },
            WinoOut {
                row2_ok: vec![true; 3],
                ..spec_out()
            },
            WinoOut {
                pool: true,
                accumulate: true,
                ow: 28,
                ..spec_out()
            },
            WinoOut {
                pool: true,
                ow: 27,
                ..spec_out()
            },
            WinoOut {
                pool: true,
                ow: 28,
                row2_ok: vec![true, true, true, false],
                ..spec_out()
            },
            WinoOut {
                plane: 1 << 30,
                ..spec_out()
            },
            WinoOut {
                tw: usize::MAX / 2,
                ..spec_out()
            },
            WinoOut {
                ow: usize::MAX,
                ..spec_out()
            },
        ];
        for g in &bad_out {
            assert!(assemble_out(g).is_err(), "{g:?}");
        }
    }
}
