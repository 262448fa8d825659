//! AVX-512 direct convolution in the channel-blocked layout (NCHW16c).
//!
//! Why: im2col writes and rereads an unfolded copy of the input (K = C·taps
//! times the output plane); a direct conv reads the input in place. In the
//! blocked layout one 16-channel block of one pixel is one zmm, so a register
//! tile of `ow` pixels × output-channel blocks accumulates
//! `acc[p][o] += broadcast(x[c][pixel p]) · w[c][o-block]` with no unfold.
//!
//! Layouts (f32 elements, one image per call):
//! - input  `x[icb][ih][iw][16]`, `icb < c.div_ceil(16)`; lanes past `c`
//!   in the last block are zero (the layout guarantees it);
//! - output `out[ocb][oh][ow][16]` for the call's `mb` blocks; lanes past
//!   `m` in the last block are written as 0;
//! - residual (when `residual`) in the output's layout, added before relu;
//! - weights: [`pack_weights`]' layout (the bias folded in), one
//!   `block_len` slice per output-channel block, so a caller starting at
//!   block `ocb0` passes `w + ocb0·block_len`.
//!
//! ```text
//! void f(const float* x, const float* w, const float* residual, float* out);
//! ```
//! Padding is handled statically (the geometry is compile-time): reads that
//! would fall in the padding are never issued.
//!
//! # Packed weights
//!
//! Per output-channel block: the 16 biases (0 without a bias), then for each
//! input block `icb`, tap row `ky`, tap column `kx` and input channel lane
//! `l` of that block (only the real ones: the last block has `c − 16·icb`)
//! one vector of the 16 output channels' weights; output lanes past `m` are
//! 0. So `block_len = 16 + kh·kw·c·16`.
//!
//! # Schedule
//!
//! Register tile: `rw` consecutive output pixels of one row × `nb` output
//! blocks in `rw·nb ≤ 28` accumulators. `nb` is the count (≤ 4) that keeps
//! the most accumulators busy over a row's column tiles, ties to more
//! blocks (fewer loads per FMA); `rw` is then the widest the registers allow
//! (`rw·nb + nb + 1 ≤ 31`), evened out over the row (ResNet: 56 = 4×14,
//! 28 = 2×14 and 14 with 2 blocks, 7 with 3 blocks; 112 = 8×14). Per input
//! channel lane and tap: `nb` weight loads, then per pixel one
//! `vbroadcastss` and `nb` FMAs. A group of `mb mod nb` blocks at the end
//! gets its own tile.
//!
//! Loops, outermost first: groups of `nb` blocks (run time), input-channel
//! chunks (run time, see below), output rows (run time), column tiles of
//! the row (static, identical consecutive tiles — the interior ones — as one
//! run-time loop), full input blocks of the chunk (run time), valid tap rows
//! (run time), then tap columns × lanes unrolled; the partial last input
//! block (`c mod 16` lanes) has its own unrolled body, so no FLOP is spent
//! on its zero lanes. Horizontal padding is static per column tile
//! (a pixel's invalid `kx` taps are not emitted); vertical padding comes from
//! a per-row table after the code (RIP-relative: no relocations): the first
//! valid tap row's x and weight offsets, the number of valid tap rows, and
//! the pointer steps between input blocks. The input rows of a tile stay in
//! L1 across the tap rows.
//!
//! Input-channel chunks: without them the weights of a group's `nb` blocks
//! (`block_len` apart; 884 KB for 3 blocks of 512 channels × 3×3) stream
//! from L2 once per column tile of every row — on a 7×7 plane 3 weight
//! vectors per 21 FMAs, the L2's limit, and slower still with the weights
//! cold in DRAM. When the group's output plane fits in L1 (≤ 32 KB: 7×7 and
//! 14×14 planes; measured no gain from 28×28 up), its input blocks are
//! split in chunks of as many blocks as keep the chunk's weights within
//! ~24 KB (at least one), and all rows of a chunk reuse them from L1. The
//! first chunk starts the accumulators at the bias, later ones load the
//! partial sums from `out`; only the last takes the partial input block,
//! adds the residual and applies relu (the zero lanes past `m` stay +0.0:
//! zero weights and bias, zero residual lanes). While a chunk computes, each
//! tap row of each tile also issues `prefetcht1` of a few lines of the next
//! chunk's weights (in the last chunk, the next group's first chunk),
//! spread so that the chunk's tiles cover the next chunk: the weights come
//! from DRAM while the FMAs run (512×7×7 with weights in DRAM: 125 → ~195
//! GFLOP/s). With one chunk the schedule is the plain one above.
//!
//! [`assemble`] returns `Err` for AVX2, degenerate geometries, block ranges
//! past `m`, offsets beyond ±2 GiB and code over 256 KiB.

use super::{z, AsmError, Level};
use iced_x86::code_asm::*;

/// Channels per block (one zmm of f32).
pub const CB: usize = 16;

/// One image of a 2-D direct convolution over `mb` output-channel blocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirectConv {
    /// Input channels and plane.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels of the whole conv (decides the zero lanes of the
    /// last block) and output plane.
    pub m: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dil: [usize; 2],
    /// Top and left padding (bottom/right follow from the sizes).
    pub pad: [usize; 2],
    /// First output-channel block this function computes and how many.
    pub ocb0: usize,
    pub mb: usize,
    pub relu: bool,
    pub residual: bool,
    /// The optimizer's tiling (see [`tile_candidates`]); None: the rule
    /// below. Applies to the main groups; a shorter group at the end keeps
    /// the rule's tile for its block count.
    pub tile: Option<crate::ir::DirectTile>,
}

/// Elements of one output-channel block in [`pack_weights`]' layout.
pub fn block_len(s: &DirectConv) -> usize {
    CB + s.kernel[0] * s.kernel[1] * s.c * CB
}

/// Packs `w` (`[m, c, kh, kw]`, row-major) and `bias` (`[m]`) for the
/// whole conv: `m.div_ceil(16)` blocks of [`block_len`] elements.
pub fn pack_weights(s: &DirectConv, w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let [kh, kw] = s.kernel;
    let blen = block_len(s);
    let nblocks = s.m.div_ceil(CB);
    assert_eq!(w.len(), s.m * s.c * kh * kw, "dconv weights");
    let mut out = vec![0.0f32; nblocks * blen];
    for ob in 0..nblocks {
        let blk = &mut out[ob * blen..(ob + 1) * blen];
        let outs = (ob * CB..(ob * CB + CB).min(s.m)).enumerate();
        if let Some(b) = bias {
            for (j, o) in outs.clone() {
                blk[j] = b[o];
            }
        }
        let mut p = CB;
        for icb in 0..s.c.div_ceil(CB) {
            let lanes = (s.c - icb * CB).min(CB);
            for ky in 0..kh {
                for kx in 0..kw {
                    for l in 0..lanes {
                        let ci = icb * CB + l;
                        for (j, o) in outs.clone() {
                            blk[p + j] = w[((o * s.c + ci) * kh + ky) * kw + kx];
                        }
                        p += CB;
                    }
                }
            }
        }
        debug_assert_eq!(p, blen);
    }
    out
}

/// Code size above which [`assemble`] refuses a geometry.
const MAX_CODE_BYTES: usize = 256 << 10;

/// Register tile: `rw` output pixels of one row × `nb` output-channel
/// blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    nb: usize,
    rw: usize,
}

impl Tile {
    /// First weight register (after the `rw·nb` accumulators).
    fn w0(&self) -> usize {
        self.rw * self.nb
    }
    /// The broadcast register.
    fn bc(&self) -> usize {
        self.w0() + self.nb
    }
    fn acc(&self, p: usize, o: usize) -> AsmRegisterZmm {
        z(p * self.nb + o)
    }
}

/// The tile for `nb` blocks at a time over an output row of `ow` pixels:
/// the widest `rw` the registers allow, then evened out over the row's
/// tiles (56 = 4×14, 24 = 2×12, 29 = 2×15).
fn tile_for(ow: usize, nb: usize) -> Tile {
    let rw_max = (1..=28).rev().find(|&rw| tile_fits(rw, nb)).unwrap_or(1);
    let n = ow.div_ceil(rw_max).max(1);
    Tile {
        nb,
        rw: ow.div_ceil(n).max(1),
    }
}

/// Output-channel blocks per tile of the main groups: the most
/// accumulators in use over a row's tiles (7 wide: 3 blocks, 21; 14, 28 or
/// 56 wide: 2 blocks, 28), ties to more blocks (fewer loads per FMA).
fn nb_for(s: &DirectConv) -> usize {
    let used = |nb: usize| {
        let t = tile_for(s.ow, nb);
        // accumulators in use per 28, in 1/1000
        s.ow * nb * 1000 / (s.ow.div_ceil(t.rw) * 28)
    };
    (1..=MAX_NB.min(s.mb).max(1))
        .max_by_key(|&nb| (used(nb), nb))
        .unwrap_or(1)
}

/// Most output-channel blocks per tile.
const MAX_NB: usize = 4;

/// An `rw × nb` tile fits the registers (accumulators, `nb` weight vectors
/// and the broadcast register, one zmm spare): the kernel's one statement of
/// its register budget.
pub fn tile_fits(rw: usize, nb: usize) -> bool {
    rw > 0 && (1..=MAX_NB).contains(&nb) && rw * nb + nb < 31
}

/// Tilings the optimizer prices for `s` (a whole conv, `ocb0 = 0`): the
/// rule's own first, then every block count up to 4 (≤ `mb`) with its
/// widest row tile, each with the rule's input-channel chunking and,
/// when that chunks, unchunked too.
pub fn tile_candidates(s: &DirectConv) -> Vec<crate::ir::DirectTile> {
    let nib = s.c.div_ceil(CB);
    let rule = rule_tile(s);
    let mut out = Vec::new();
    for nb in std::iter::once(rule.nb).chain((1..=MAX_NB.min(s.mb)).rev()) {
        let t = tile_with(s, nb);
        for kc in [t.kc, nib] {
            let t = crate::ir::DirectTile { kc, ..t };
            if tile_fits(t.rw, t.nb) && !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// The kernel's own tiling of `s` (ignoring `s.tile`): the first of
/// [`tile_candidates`].
pub fn rule_tile(s: &DirectConv) -> crate::ir::DirectTile {
    let plain = DirectConv {
        tile: None,
        ..s.clone()
    };
    tile_with(s, nb_for(&plain))
}

/// The rule's row tile and input-channel chunking for `nb` blocks per tile.
fn tile_with(s: &DirectConv, nb: usize) -> crate::ir::DirectTile {
    let plain = DirectConv {
        tile: None,
        ..s.clone()
    };
    let t = tile_for(s.ow, nb);
    crate::ir::DirectTile {
        rw: t.rw,
        nb,
        kc: chunks_for(&plain, t).kc,
    }
}

/// Input-channel chunking of a group: `kc` input blocks per chunk, `n`
/// chunks; the last has `full_last` full blocks (plus the partial block
/// when `c mod 16 ≠ 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunks {
    kc: usize,
    n: usize,
    full_last: usize,
}

/// Target bytes of one chunk's weights for a group (L1-resident next to
/// the input rows).
const CHUNK_BYTES: usize = 24 << 10;

/// Most bytes of a group's output plane (its partial sums) for which the
/// input channels are chunked: each chunk rereads and rewrites them, so
/// they should stay in L1.
const CHUNK_PLANE_BYTES: usize = 32 << 10;

/// The input-channel chunks of a group of `t.nb` blocks: with a small
/// output plane, as many input blocks as keep the chunk's weights within
/// [`CHUNK_BYTES`] (at least one); otherwise (measured: no gain from 28×28
/// up, 56×56 7% slower) one chunk of all.
fn chunks_for(s: &DirectConv, t: Tile) -> Chunks {
    let nib = s.c.div_ceil(CB);
    let per_block = t.nb * s.kernel[0] * s.kernel[1] * CB * CB * 4;
    let plane = t.nb * s.oh * s.ow * CB * 4;
    let kc = match s.tile {
        Some(d) if d.nb == t.nb => d.kc.clamp(1, nib),
        _ if plane <= CHUNK_PLANE_BYTES => (CHUNK_BYTES / per_block).clamp(1, nib),
        _ => nib,
    };
    let n = nib.div_ceil(kc);
    let full = s.c / CB;
    Chunks {
        kc,
        n,
        full_last: full - (n - 1) * kc,
    }
}

/// Bytes per entry of the row table: x offset, weight offset, valid
/// vertical taps, x and weight steps from one input block to the next,
/// and the weight correction of the partial last input block.
const ROW_BYTES: i32 = 48;
const T_X: i32 = 0;
const T_W: i32 = 8;
const T_NKY: i32 = 16;
const T_XADJ: i32 = 24;
const T_WADJ: i32 = 32;
const T_WPART: i32 = 40;

/// r13 points this many bytes past the tile's first input pixel, so the
/// broadcasts of 16 pixels fit a compressed 8-bit displacement (±127·4).
const X_BIAS: i64 = 512;

/// Where a tile finds the chunks left (above the rows-left counter).
const CHUNKS_LEFT: i32 = 8;

fn err(msg: impl Into<String>) -> AsmError {
    AsmError(msg.into())
}

fn i32_of(v: i64) -> Result<i32, AsmError> {
    i32::try_from(v).map_err(|_| err("offset exceeds 2 GiB"))
}

/// Assembles the kernel for `s`.
pub fn assemble(s: &DirectConv, level: Level) -> Result<Vec<u8>, String> {
    if level != Level::Avx512 {
        return Err("direct conv: AVX-512 only".into());
    }
    let [kh, kw] = s.kernel;
    if s.c == 0 || kh == 0 || kw == 0 {
        return Err("direct conv: empty kernel or no input channels".into());
    }
    if s.strides.contains(&0) || s.dil.contains(&0) {
        return Err("direct conv: zero stride or dilation".into());
    }
    if let Some(t) = s.tile.filter(|t| !tile_fits(t.rw, t.nb)) {
        return Err(format!("direct conv: tile {t} does not fit the registers"));
    }
    if s.ocb0 + s.mb > s.m.div_ceil(CB) {
        return Err(format!(
            "direct conv: blocks {}..{} past the {} output blocks",
            s.ocb0,
            s.ocb0 + s.mb,
            s.m.div_ceil(CB)
        ));
    }
    let code = Gen::new(s).and_then(|g| g.run()).map_err(|e| e.0)?;
    if code.len() > MAX_CODE_BYTES {
        return Err(format!(
            "direct conv: {} bytes of code (limit {MAX_CODE_BYTES})",
            code.len()
        ));
    }
    Ok(code)
}

/// Column tiles of a row with the same shape and valid taps, consecutive.
struct Segment {
    /// First output column and number of tiles.
    ox0: usize,
    count: usize,
    width: usize,
    /// `valid[p][kx]`: pixel `p` of the tile reads input column at tap `kx`.
    valid: Vec<Vec<bool>>,
}

struct Gen<'a> {
    s: &'a DirectConv,
    a: CodeAssembler,
    table: CodeLabel,
}

// Registers. rdi: x (of the chunk); rsi: weights of the group (of the
// chunk); rdx: residual row; rcx: output row; rbx: row-table entry; rbp:
// tiles left in a segment, r10/r11: its x / output column offsets (bytes);
// r9/r8: 1 and 3 weight blocks in bytes (index registers); r13/r14: running
// x / weight pointers; r15: prefetch pointer (next chunk's weights); eax:
// input blocks left; r12: taps rows left. Stack: [rsp] rows left, above it
// the chunks left (with several chunks), above that the groups left (with
// several groups).
impl<'a> Gen<'a> {
    fn new(s: &'a DirectConv) -> Result<Self, AsmError> {
        let mut a = CodeAssembler::new(64)?;
        let table = a.create_label();
        Ok(Gen { s, a, table })
    }

    /// Lines per output block to prefetch per tap row of a tile: enough
    /// that one chunk's tiles cover the next chunk's weights; 0 for none.
    fn prefetch_lines(&self, t: Tile, ck: Chunks) -> usize {
        let s = self.s;
        if ck.n < 2 {
            return 0;
        }
        let [kh, kw] = s.kernel;
        let tiles = s.ow.div_ceil(t.rw);
        let nky: usize = (0..s.oh)
            .map(|oy| {
                (0..kh)
                    .filter(|&k| {
                        let iy = (oy * s.strides[0] + k * s.dil[0]) as i64 - s.pad[0] as i64;
                        (0..s.h as i64).contains(&iy)
                    })
                    .count()
            })
            .sum();
        let execs = (tiles * nky).max(1);
        (kh * kw * CB).div_ceil(execs)
    }

    fn lanes_last(&self) -> usize {
        self.s.c - (self.s.c.div_ceil(CB) - 1) * CB
    }

    fn full_blocks(&self) -> usize {
        self.s.c / CB
    }

    /// Bytes from one output block to the next.
    fn out_block(&self) -> usize {
        self.s.oh * self.s.ow * CB * 4
    }

    fn col_ok(&self, ox: usize, kx: usize) -> bool {
        let s = self.s;
        let ix = (ox * s.strides[1] + kx * s.dil[1]) as i64 - s.pad[1] as i64;
        (0..s.w as i64).contains(&ix)
    }

    fn segments(&self, t: Tile) -> Vec<Segment> {
        let s = self.s;
        let mut segs: Vec<Segment> = Vec::new();
        let mut ox = 0;
        while ox < s.ow {
            let width = t.rw.min(s.ow - ox);
            let valid: Vec<Vec<bool>> = (0..width)
                .map(|p| (0..s.kernel[1]).map(|kx| self.col_ok(ox + p, kx)).collect())
                .collect();
            match segs.last_mut() {
                Some(g) if g.width == width && g.valid == valid => g.count += 1,
                _ => segs.push(Segment {
                    ox0: ox,
                    count: 1,
                    width,
                    valid,
                }),
            }
            ox += width;
        }
        segs
    }

    fn run(mut self) -> Result<Vec<u8>, AsmError> {
        let s = self.s;
        if s.mb == 0 || s.oh == 0 || s.ow == 0 {
            self.a.ret()?;
            return self.finish();
        }
        for r in [rbx, rbp, r12, r13, r14, r15] {
            self.a.push(r)?;
        }
        let nb = s.tile.map_or_else(|| nb_for(s), |t| t.nb.clamp(1, s.mb));
        let main = s.mb / nb;
        let bl4 = (block_len(s) * 4) as u64;
        self.a.mov(r9, bl4)?;
        self.a.mov(r8, 3 * bl4)?;
        if main > 0 {
            let t = match s.tile {
                Some(d) if d.nb == nb => Tile {
                    nb,
                    rw: d.rw.clamp(1, s.ow),
                },
                _ => tile_for(s.ow, nb),
            };
            self.group_loop(t, main)?;
        }
        if !s.mb.is_multiple_of(nb) {
            self.group_loop(tile_for(s.ow, s.mb % nb), 1)?;
        }
        for r in [r15, r14, r13, r12, rbp, rbx] {
            self.a.pop(r)?;
        }
        self.a.vzeroupper()?;
        self.a.ret()?;
        self.emit_table()?;
        self.finish()
    }

    fn finish(mut self) -> Result<Vec<u8>, AsmError> {
        Ok(self.a.assemble(0)?)
    }

    /// `groups` groups of `t.nb` blocks, each all rows.
    fn group_loop(&mut self, t: Tile, groups: usize) -> Result<(), AsmError> {
        let s = self.s;
        let mut l_grp = self.a.create_label();
        if groups > 1 {
            self.a.push(groups as i32)?;
        }
        self.a.set_label(&mut l_grp)?;
        let ck = chunks_for(s, t);
        let mut l_chunk = self.a.create_label();
        if ck.n > 1 {
            self.a.push(ck.n as i32)?;
            self.a.set_label(&mut l_chunk)?;
        }
        let pf = self.prefetch_lines(t, ck);
        if pf > 0 {
            // Prefetch pointer: the next chunk, or in the last chunk the
            // next group's first.
            let w_chunk = (ck.kc * s.kernel[0] * s.kernel[1] * CB * CB * 4) as i64;
            let next_group = (t.nb * block_len(s) * 4) as i64 - (ck.n - 1) as i64 * w_chunk;
            let mut l_last = self.a.create_label();
            let mut l_set = self.a.create_label();
            self.a.cmp(qword_ptr(rsp), 1)?;
            self.a.je(l_last)?;
            self.a
                .lea(r15, ptr(rsi + i32_of(CB as i64 * 4 + w_chunk)?))?;
            self.a.jmp(l_set)?;
            self.a.set_label(&mut l_last)?;
            self.a
                .lea(r15, ptr(rsi + i32_of(CB as i64 * 4 + next_group)?))?;
            self.a.set_label(&mut l_set)?;
        }
        self.a.lea(rbx, ptr(self.table))?;
        self.a.push(s.oh as i32)?;
        let mut l_row = self.a.create_label();
        self.a.set_label(&mut l_row)?;
        for seg in self.segments(t) {
            self.segment(t, ck, pf, &seg)?;
        }
        let row = i32_of((s.ow * CB * 4) as i64)?;
        self.a.add(rcx, row)?;
        if s.residual {
            self.a.add(rdx, row)?;
        }
        self.a.add(rbx, ROW_BYTES)?;
        self.a.dec(qword_ptr(rsp))?;
        self.a.jne(l_row)?;
        self.a.pop(rax)?;
        if ck.n > 1 {
            // Next chunk: the next kc input blocks' x and weights, the
            // group's output (and residual) plane again.
            let x_chunk = (ck.kc * s.h * s.w * CB * 4) as i64;
            let w_chunk = (ck.kc * s.kernel[0] * s.kernel[1] * CB * CB * 4) as i64;
            let plane = i32_of((s.oh * s.ow * CB * 4) as i64)?;
            let mut l_done = self.a.create_label();
            self.a.dec(qword_ptr(rsp))?;
            self.a.je(l_done)?;
            self.a.add(rdi, i32_of(x_chunk)?)?;
            self.a.add(rsi, i32_of(w_chunk)?)?;
            self.a.sub(rcx, plane)?;
            if s.residual {
                self.a.sub(rdx, plane)?;
            }
            self.a.jmp(l_chunk)?;
            self.a.set_label(&mut l_done)?;
            self.a.pop(rax)?;
            let back = (ck.n - 1) as i64;
            self.a.sub(rdi, i32_of(back * x_chunk)?)?;
            self.a.sub(rsi, i32_of(back * w_chunk)?)?;
        }
        // rcx/rdx stand at the group's second block: skip to the next group.
        let rest = i32_of(((t.nb - 1) * self.out_block()) as i64)?;
        if rest != 0 {
            self.a.add(rcx, rest)?;
            if s.residual {
                self.a.add(rdx, rest)?;
            }
        }
        self.a.add(rsi, i32_of((t.nb * block_len(s) * 4) as i64)?)?;
        if groups > 1 {
            self.a.dec(qword_ptr(rsp))?;
            self.a.jne(l_grp)?;
            self.a.pop(rax)?;
        }
        Ok(())
    }

    fn segment(&mut self, t: Tile, ck: Chunks, pf: usize, seg: &Segment) -> Result<(), AsmError> {
        let s = self.s;
        let x_col =
            |ox: usize| -> i64 { ((ox * s.strides[1]) as i64 - s.pad[1] as i64) * (CB * 4) as i64 };
        if seg.count == 1 {
            return self.tile(t, ck, pf, seg, Some((x_col(seg.ox0), seg.ox0 * CB * 4)));
        }
        self.a.mov(ebp, seg.count as u32)?;
        self.a.mov(r10, x_col(seg.ox0) + X_BIAS)?;
        self.a.mov(r11, (seg.ox0 * CB * 4) as u64)?;
        let mut l = self.a.create_label();
        self.a.set_label(&mut l)?;
        self.tile(t, ck, pf, seg, None)?;
        self.a
            .add(r10, i32_of((seg.width * s.strides[1] * CB * 4) as i64)?)?;
        self.a.add(r11, i32_of((seg.width * CB * 4) as i64)?)?;
        self.a.dec(ebp)?;
        self.a.jne(l)?;
        Ok(())
    }

    /// Output (or residual) vector of pixel `p`, block `o` from `base`.
    fn out_mem(
        &self,
        base: AsmRegister64,
        cols: Option<(i64, usize)>,
        p: usize,
        o: usize,
    ) -> Result<AsmMemoryOperand, AsmError> {
        let d = (p * CB * 4 + o * self.out_block()) as i64;
        Ok(match cols {
            Some((_, oc)) => zmmword_ptr(base + i32_of(d + oc as i64)?),
            None => zmmword_ptr(base + r11 + i32_of(d)?),
        })
    }

    /// One register tile at static columns (`cols`: x and output byte
    /// offsets) or at r10/r11, over the input blocks of one chunk (with
    /// several chunks, `[rsp]` counts the chunks left: the first starts
    /// from the bias, later ones from the partial sums in `out`; only the
    /// last takes the partial input block, the residual and relu).
    fn tile(
        &mut self,
        t: Tile,
        ck: Chunks,
        pf: usize,
        seg: &Segment,
        cols: Option<(i64, usize)>,
    ) -> Result<(), AsmError> {
        let s = self.s;
        let bl4 = (block_len(s) * 4) as i64;
        let chunked = ck.n > 1;
        // x and weight pointers of the row's first valid tap row, block 0.
        self.a.mov(r13, qword_ptr(rbx + T_X))?;
        self.a.add(r13, rdi)?;
        match cols {
            Some((xc, _)) => self.a.add(r13, i32_of(xc + X_BIAS)?)?,
            None => self.a.add(r13, r10)?,
        }
        self.a.mov(r14, qword_ptr(rbx + T_W))?;
        self.a.add(r14, rsi)?;
        // Accumulators start at the bias (first chunk) or the partial sums.
        let mut l_load = self.a.create_label();
        let mut l_go = self.a.create_label();
        if chunked {
            self.a.cmp(qword_ptr(rsp + CHUNKS_LEFT), ck.n as i32)?;
            self.a.jne(l_load)?;
        }
        for o in 0..t.nb {
            let b = z(t.w0() + o);
            self.a
                .vmovups(b, zmmword_ptr(rsi + i32_of(o as i64 * bl4)?))?;
            for p in 0..seg.width {
                self.a.vmovaps(t.acc(p, o), b)?;
            }
        }
        if chunked {
            self.a.jmp(l_go)?;
            self.a.set_label(&mut l_load)?;
            for o in 0..t.nb {
                for p in 0..seg.width {
                    let m = self.out_mem(rcx, cols, p, o)?;
                    self.a.vmovups(t.acc(p, o), m)?;
                }
            }
            self.a.set_label(&mut l_go)?;
        }
        let mut l_epi = self.a.create_label();
        self.a.cmp(qword_ptr(rbx + T_NKY), 0)?;
        self.a.je(l_epi)?;
        let (kw, full, last) = (s.kernel[1], self.full_blocks(), self.lanes_last());
        let x_ky = i32_of((s.dil[0] * s.w * CB * 4) as i64)?;
        // Full input blocks of this chunk: `kc`, `full_last` in the last.
        let (most, fewest) = if chunked {
            (ck.kc, ck.full_last)
        } else {
            (full, full)
        };
        if most > 0 {
            let mut l_icb = self.a.create_label();
            let mut l_ky = self.a.create_label();
            let mut l_part = self.a.create_label();
            if chunked {
                self.a.mov(eax, most as u32)?;
                if fewest != most {
                    self.a.cmp(qword_ptr(rsp + CHUNKS_LEFT), 1)?;
                    self.a.jne(l_icb)?;
                    self.a.mov(eax, fewest as u32)?;
                    if fewest == 0 {
                        self.a.jmp(l_part)?;
                    }
                }
            } else if full > 1 {
                self.a.mov(eax, full as u32)?;
            }
            self.a.set_label(&mut l_icb)?;
            self.a.mov(r12, qword_ptr(rbx + T_NKY))?;
            self.a.set_label(&mut l_ky)?;
            self.taps(t, seg, CB, pf)?;
            if pf > 0 {
                self.a.add(r15, (pf * 64) as i32)?;
            }
            self.a.add(r13, x_ky)?;
            self.a.add(r14, i32_of((kw * CB * CB * 4) as i64)?)?;
            self.a.dec(r12)?;
            self.a.jne(l_ky)?;
            if chunked || full > 1 || last < CB {
                self.a.add(r13, qword_ptr(rbx + T_XADJ))?;
                self.a.add(r14, qword_ptr(rbx + T_WADJ))?;
            }
            if chunked || full > 1 {
                self.a.dec(eax)?;
                self.a.jne(l_icb)?;
            }
            if chunked && fewest == 0 {
                self.a.set_label(&mut l_part)?;
            }
        }
        if last < CB {
            let mut l_ky = self.a.create_label();
            if chunked {
                self.a.cmp(qword_ptr(rsp + CHUNKS_LEFT), 1)?;
                self.a.jne(l_epi)?;
            }
            self.a.add(r14, qword_ptr(rbx + T_WPART))?;
            self.a.mov(r12, qword_ptr(rbx + T_NKY))?;
            self.a.set_label(&mut l_ky)?;
            self.taps(t, seg, last, pf)?;
            if pf > 0 {
                self.a.add(r15, (pf * 64) as i32)?;
            }
            self.a.add(r13, x_ky)?;
            self.a.add(r14, i32_of((kw * last * CB * 4) as i64)?)?;
            self.a.dec(r12)?;
            self.a.jne(l_ky)?;
        }
        self.a.set_label(&mut l_epi)?;
        let mut l_store = self.a.create_label();
        if chunked && (s.residual || s.relu) {
            self.a.cmp(qword_ptr(rsp + CHUNKS_LEFT), 1)?;
            self.a.jne(l_store)?;
        }
        let zero = z(t.w0());
        if s.relu {
            self.a.vpxord(zero, zero, zero)?;
        }
        for o in 0..t.nb {
            for p in 0..seg.width {
                let acc = t.acc(p, o);
                if s.residual {
                    let m = self.out_mem(rdx, cols, p, o)?;
                    self.a.vaddps(acc, acc, m)?;
                }
                if s.relu {
                    self.a.vmaxps(acc, acc, zero)?;
                }
            }
        }
        if chunked && (s.residual || s.relu) {
            self.a.set_label(&mut l_store)?;
        }
        for o in 0..t.nb {
            for p in 0..seg.width {
                let m = self.out_mem(rcx, cols, p, o)?;
                self.a.vmovups(m, t.acc(p, o))?;
            }
        }
        Ok(())
    }

    /// One row of taps (all kx, `lanes` input channels) from r13/r14.
    fn taps(&mut self, t: Tile, seg: &Segment, lanes: usize, pf: usize) -> Result<(), AsmError> {
        let s = self.s;
        let kxs: Vec<usize> = (0..s.kernel[1])
            .filter(|&kx| (0..seg.width).any(|p| seg.valid[p][kx]))
            .collect();
        let steps = (kxs.len() * lanes).max(1);
        let npf = pf * t.nb;
        let mut step = 0;
        for kx in 0..s.kernel[1] {
            let pix: Vec<usize> = (0..seg.width).filter(|&p| seg.valid[p][kx]).collect();
            if pix.is_empty() {
                continue;
            }
            for l in 0..lanes {
                // This step's share of the prefetches (lines of the blocks
                // round robin).
                for j in step * npf / steps..(step + 1) * npf / steps {
                    let (o, d) = (j % t.nb, i32_of((j / t.nb * 64) as i64)?);
                    let m = match o {
                        0 => byte_ptr(r15 + d),
                        1 => byte_ptr(r15 + r9 + d),
                        2 => byte_ptr(r15 + r9 * 2 + d),
                        _ => byte_ptr(r15 + r8 + d),
                    };
                    self.a.prefetcht1(m)?;
                }
                step += 1;
                let wd = (((kx * lanes + l) * CB) * 4) as i64;
                for o in 0..t.nb {
                    let d = i32_of(wd)?;
                    let m = match o {
                        0 => zmmword_ptr(r14 + d),
                        1 => zmmword_ptr(r14 + r9 + d),
                        2 => zmmword_ptr(r14 + r9 * 2 + d),
                        _ => zmmword_ptr(r14 + r8 + d),
                    };
                    self.a.vmovups(z(t.w0() + o), m)?;
                }
                for &p in &pix {
                    let xd = ((p * s.strides[1] + kx * s.dil[1]) * CB * 4 + l * 4) as i64;
                    let xd = i32_of(xd - X_BIAS)?;
                    // One broadcast per pixel: FMAs with an embedded
                    // {1to16} operand measured 5–25% slower (a load per
                    // FMA: load-port bound).
                    let bc = z(t.bc());
                    self.a.vbroadcastss(bc, dword_ptr(r13 + xd))?;
                    for o in 0..t.nb {
                        self.a.vfmadd231ps(t.acc(p, o), z(t.w0() + o), bc)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Per output row: where its first valid tap row starts (x, weights),
    /// how many tap rows are valid, and the steps between input blocks.
    fn emit_table(&mut self) -> Result<(), AsmError> {
        let s = self.s;
        let [kh, kw] = s.kernel;
        let (px, pw) = ((CB * 4) as i64, (kw * CB * CB * 4) as i64);
        let mut rows: Vec<u64> = Vec::with_capacity(s.oh * 6);
        for oy in 0..s.oh {
            let iy = |ky: usize| (oy * s.strides[0] + ky * s.dil[0]) as i64 - s.pad[0] as i64;
            let ok: Vec<usize> = (0..kh)
                .filter(|&k| (0..s.h as i64).contains(&iy(k)))
                .collect();
            let (lo, n) = match ok.first() {
                Some(&lo) => (lo, ok.len()),
                None => (0, 0),
            };
            let x = if n > 0 { iy(lo) * s.w as i64 * px } else { 0 };
            let n64 = n as i64;
            let x_adj = (s.h * s.w) as i64 * px - n64 * (s.dil[0] * s.w) as i64 * px;
            let w_adj = (kh as i64 - n64) * pw;
            let last = self.lanes_last() as i64;
            let w_part = lo as i64 * kw as i64 * (last - CB as i64) * px;
            for v in [x, px + lo as i64 * pw, n64, x_adj, w_adj, w_part] {
                rows.push(v as u64);
            }
        }
        let mut l = self.table;
        self.a.set_label(&mut l)?;
        self.a.dq(&rows)?;
        Ok(())
    }
}
