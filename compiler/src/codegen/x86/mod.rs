//! x86-64 GEMM kernels assembled at compile time with `iced-x86`.
//!
//! Cranelift's x86-64 backend only emits 128-bit vectors (see
//! `shared/notes/cranelift-facts.md`), which caps a Cranelift GEMM at a
//! quarter of an AVX-512 core. Here the hot loops are machine code written
//! in Rust: one complete SysV function per GEMM call site,
//!
//! ```text
//! void f(const float* A, const float* B, float* C, const float* bias);
//! C[i,j] = relu?(alpha·Σ_k A[i·a_row + k·a_col]·B[k·b_row + j] + beta·bias[i·bias_row + j·bias_col])
//! ```
//!
//! specialized for its static sizes and strides (loop bounds, displacements
//! and masks are constants). The bytes go into the object or JIT module with
//! `Module::define_function_bytes`; they use no relocations (constants live
//! after the `ret`, addressed RIP-relative).
//!
//! # Schedule
//!
//! Register tile `mr × nv·lanes` (AVX-512: 14×32 in 28 zmm accumulators,
//! or 13 or fewer rows where 14 would leave a 1–3 row tail, A values
//! broadcast with `vbroadcastss`, B rows loaded as two zmm; AVX2: 6×16 in
//! 12 ymm; fewer rows than a tile get a wider, shorter tile). Loops,
//! outermost first:
//!
//! 1. row blocks of `mc` rows (the A block, mc × K, is reread for every
//!    column panel: sized to stay in L2),
//! 2. column panels of NR = nv·lanes columns (the last one masked: opmask
//!    `k1` on AVX-512, `vmaskmovps` on AVX2),
//! 3. K blocks of `kc`: partial sums are stored raw in C and reloaded by the
//!    next K block; the epilogue (alpha, bias, relu) runs in the last one,
//! 4. row tiles of `mr` (the last one shorter), each a K loop unrolled by `ku`.
//!
//! Only the tile kinds (full/short rows × full/masked panel) are separate
//! code; K-block and row-block differences are runtime branches per tile,
//! so a kernel is a few KiB however large the GEMM.
//!
//! B is read one of three ways:
//! - pre-packed at compile time by [`pack_b`] (constant weights): each
//!   NR-column panel K-major and contiguous, zero-padded to whole vectors;
//!   the K loops prefetch the next panel into L2, spread over the row tiles;
//! - packed at run time ([`Tiling::pack`]): each K block of each panel is
//!   copied into a 64-byte aligned stack buffer (≤ [`MAX_PACK_BYTES`], pages
//!   probed in order) before the row tiles use it, while the K loops prefetch
//!   the next slice into L2 (strided rows defeat the hardware prefetchers);
//! - in place (few rows: packing would not pay).
//!
//! With alpha = 1 the bias initializes the accumulators instead of joining
//! the epilogue, so `bias == C` (`C += A·B`) is allowed even with K blocks;
//! with alpha ≠ 1 and a bias, K is never blocked.

mod avx2;
mod avx512;
pub mod backend;
pub mod dconv;
pub mod im2col;
pub mod pool;
pub mod softmax;
pub mod winograd;

use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// The x86-64 vector level a kernel is assembled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// AVX2 + FMA3 (x86-64-v3): 16 ymm registers.
    Avx2Fma,
    /// AVX-512F (x86-64-v4): 32 zmm registers, opmasks, embedded broadcast.
    Avx512,
}

impl Level {
    /// f32 lanes per vector register.
    pub fn lanes(self) -> usize {
        match self {
            Level::Avx2Fma => 8,
            Level::Avx512 => 16,
        }
    }

    /// The best level the running CPU supports.
    pub fn detect_host() -> Option<Level> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Level::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Level::Avx2Fma);
            }
        }
        None
    }
}

/// One GEMM, all sizes and strides in f32 elements (mirrors `gemm::GemmSpec`).
#[derive(Clone, Debug, PartialEq)]
pub struct AsmGemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_row: usize,
    pub a_col: usize,
    /// Row stride of B (column stride 1); ignored when `b_packed`.
    pub b_row: usize,
    /// Row stride of C (column stride 1).
    pub c_row: usize,
    pub alpha: f32,
    /// `(row_stride, col_stride ∈ {0, 1}, beta)` of the epilogue addend.
    pub bias: Option<(usize, usize, f32)>,
    pub relu: bool,
    /// B is in the layout [`pack_b`] produces for this spec and level.
    pub b_packed: bool,
    /// Register tile and row block chosen by the optimizer (validated by
    /// [`tile_fits`]); None: [`tiling`]'s rule.
    pub tile: Option<crate::ir::GemmTile>,
}

impl AsmGemm {
    /// A plain `C = A·B` of dense row-major `[m, k]` and `[k, n]`
    /// matrices (B pre-packed when `b_packed`), with the kernels' rule
    /// tiling: the product the tiling rules and panel widths are asked about.
    pub fn dense(m: usize, n: usize, k: usize, b_packed: bool) -> AsmGemm {
        AsmGemm {
            m,
            n,
            k,
            a_row: k,
            a_col: 1,
            b_row: n,
            c_row: n,
            alpha: 1.0,
            bias: None,
            relu: false,
            b_packed,
            tile: None,
        }
    }
}

/// Register tile and cache blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Rows per register tile.
    pub mr: usize,
    /// Vectors per tile row (NR = nv·lanes).
    pub nv: usize,
    /// K unroll of the inner loop.
    pub ku: usize,
    /// K block (a multiple of `ku` when K is split).
    pub kc: usize,
    /// Row block (a multiple of `mr` when M is split).
    pub mc: usize,
    /// Copy each K block of each B panel into a stack buffer before use
    /// (B not pre-packed): contiguous rows for the tiles.
    pub pack: bool,
    /// With `pack`: prefetch the next B slice into L2 during the K loops, so
    /// the next pack does not wait on memory (strided rows defeat the
    /// hardware prefetchers). With pre-packed B: prefetch the next panel.
    pub prefetch: bool,
}

/// The tiling [`assemble`] and [`pack_b`] use for `spec` at `level`: the
/// optimizer's register tile and row block when it chose one that fits,
/// else the rule below.
pub fn tiling(spec: &AsmGemm, level: Level) -> Tiling {
    let (mr, nv) = match spec.tile {
        Some(t) if tile_fits(level, t.mr, t.nv) => (t.mr.min(spec.m.max(1)), t.nv),
        _ => rule_tile(spec, level),
    };
    let mut t = blocking(spec, level, mr, nv);
    if let Some(c) = spec.tile.filter(|t| tile_fits(level, t.mr, t.nv)) {
        let mc = (c.mc / mr).max(1) * mr;
        t.mc = if spec.m <= mc { spec.m.max(1) } else { mc };
    }
    t
}

/// An `mr × nv` register tile fits the level's registers (AVX-512:
/// accumulators + B vectors below the two broadcast registers).
pub fn tile_fits(level: Level, mr: usize, nv: usize) -> bool {
    mr > 0
        && nv > 0
        && match level {
            Level::Avx512 => mr * nv + nv <= 30,
            Level::Avx2Fma => mr * nv <= 12 && nv <= 2,
        }
}

/// Register tiles and row blocks the optimizer prices for an `m×n×k` GEMM
/// (B pre-packed when `b_const`): the rule's own tiling first, then the
/// other tile shapes that fit the registers (tall-narrow, square-ish,
/// wide), each with the row block the blocking rule gives that shape and
/// one of half its size.
pub fn tile_candidates(
    m: usize,
    n: usize,
    k: usize,
    b_const: bool,
    level: Level,
) -> Vec<crate::ir::GemmTile> {
    let spec = AsmGemm::dense(m, n, k, b_const);
    let mut shapes = vec![rule_tile(&spec, level)];
    let extra: &[(usize, usize)] = match level {
        Level::Avx512 => &[(14, 2), (tall_mr(m), 2), (8, 3), (6, 4), (28, 1)],
        Level::Avx2Fma => &[(6, 2), (4, 2), (12, 1)],
    };
    shapes.extend(extra.iter().map(|&(mr, nv)| (mr.min(m.max(1)), nv)));
    let mut out: Vec<crate::ir::GemmTile> = Vec::new();
    for (mr, nv) in shapes {
        if !tile_fits(level, mr, nv) {
            continue;
        }
        let mc = blocking(&spec, level, mr, nv).mc;
        let half = (mc / 2 / mr).max(1) * mr;
        for mc in [mc, half] {
            let t = crate::ir::GemmTile { mr, nv, mc };
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// The assembled kernels' own tiling of an `m×n×k` GEMM: the first of
/// [`tile_candidates`].
pub fn rule_gemm_tile(
    m: usize,
    n: usize,
    k: usize,
    b_const: bool,
    level: Level,
) -> crate::ir::GemmTile {
    let spec = AsmGemm::dense(m, n, k, b_const);
    let (mr, nv) = rule_tile(&spec, level);
    let mc = blocking(&spec, level, mr, nv).mc;
    crate::ir::GemmTile { mr, nv, mc }
}

/// The rule's register tile (rows × vectors) for `spec`.
fn rule_tile(spec: &AsmGemm, level: Level) -> (usize, usize) {
    match level {
        // One vector of columns (attention's P·V with small heads): rows
        // are the only accumulator chains; tall tiles of equal height (no
        // short, latency-bound last tile).
        Level::Avx512 if spec.n <= 16 && spec.m > 6 && !spec.b_packed => {
            let tiles = spec.m.div_ceil(28);
            (spec.m.div_ceil(tiles), 1)
        }
        // Few rows: wider tiles keep more accumulator chains in flight.
        Level::Avx512 if spec.m <= 6 => (spec.m.max(1), 4),
        Level::Avx512 if spec.m < 14 => (spec.m, 2),
        Level::Avx512 => (tall_mr(spec.m), 2),
        Level::Avx2Fma if spec.m <= 6 => (spec.m.max(1), 2),
        Level::Avx2Fma => (6, 2),
    }
}

/// K and row blocking and B packing for an `mr × nv` tile.
fn blocking(spec: &AsmGemm, level: Level, mr: usize, nv: usize) -> Tiling {
    // Runtime packing pays once the panel is reused by a few row tiles.
    let late_bias = spec.bias.is_some() && spec.alpha != 1.0;
    // B of one vector per row is read in place (masked): a copy would cost
    // as much as the reads it saves.
    let pack = !spec.b_packed
        && spec.m > mr
        && spec.n > level.lanes()
        && (!late_bias || spec.k * nv * level.lanes() * 4 <= MAX_PACK_BYTES);
    // Pre-packed B streams contiguously from L2: no K blocking (it would
    // only add C reloads). The stack pack buffer bounds kc otherwise.
    let kc = if spec.b_packed || !pack || spec.k <= 384 {
        spec.k.max(1)
    } else {
        256
    };
    // The A block (mc rows × K) is reread for every panel: keep it in about
    // 1 MiB of the 2 MiB L2; with runtime packing every row block repacks B,
    // so fewer, larger blocks (1.5 MiB: BERT's 128×3072 A stays whole).
    let budget = if pack { 3 << 17 } else { 1 << 18 };
    let mc = (budget / spec.k.max(1)).max(mr) / mr * mr;
    let mc = if spec.m <= mc + mc / 4 {
        spec.m.max(1)
    } else {
        mc
    };
    Tiling {
        mr,
        nv,
        ku: 4,
        kc,
        mc,
        pack,
        prefetch: true,
    }
}

/// Rows of the full AVX-512 tile for `m ≥ 14` rows: 14, unless that leaves
/// a tail of 1–3 rows, whose 2–6 accumulator chains cannot hide the FMA
/// latency (it needs 8 in flight); then the tallest shorter tile that
/// divides `m` or leaves at least 4 rows (M = 128: 9×13 + 11 instead of
/// 9×14 + 2, +3% on BERT's 128-row GEMMs).
fn tall_mr(m: usize) -> usize {
    let ok = |mr: usize| m.is_multiple_of(mr) || m % mr >= 4;
    (10..=14).rev().find(|&mr| ok(mr)).unwrap_or(14)
}

/// Largest stack buffer for runtime B packing (larger requests run unpacked).
pub const MAX_PACK_BYTES: usize = 64 << 10;

/// Number of f32 elements [`pack_b`] produces.
pub fn packed_b_len(spec: &AsmGemm, level: Level, t: &Tiling) -> usize {
    let lanes = level.lanes();
    let nr = t.nv * lanes;
    let full = spec.n / nr;
    let tail = (spec.n - full * nr).div_ceil(lanes) * lanes;
    (full * nr + tail) * spec.k
}

/// Repacks B (`[K, N]`, row stride `spec.b_row`, column stride 1) into NR-column
/// panels, each K-major and contiguous, the last one zero-padded to whole
/// vectors. Use with `b_packed: true` and the same tiling.
pub fn pack_b(spec: &AsmGemm, level: Level, t: &Tiling, b: &[f32]) -> Vec<f32> {
    let lanes = level.lanes();
    let nr = t.nv * lanes;
    let mut out = Vec::with_capacity(packed_b_len(spec, level, t));
    let mut j0 = 0;
    while j0 < spec.n {
        let cols = nr.min(spec.n - j0);
        let wp = cols.div_ceil(lanes) * lanes;
        for kk in 0..spec.k {
            let row = &b[kk * spec.b_row + j0..kk * spec.b_row + j0 + cols];
            out.extend_from_slice(row);
            out.extend(std::iter::repeat_n(0.0, wp - cols));
        }
        j0 += cols;
    }
    out
}

/// Assembles the GEMM with the default [`tiling`].
pub fn assemble(spec: &AsmGemm, level: Level) -> Result<Vec<u8>, String> {
    assemble_with(spec, level, &tiling(spec, level))
}

/// Assembles the GEMM with an explicit tiling (benchmarks, tuning).
pub fn assemble_with(spec: &AsmGemm, level: Level, t: &Tiling) -> Result<Vec<u8>, String> {
    if !tile_fits(level, t.mr, t.nv) || t.ku == 0 {
        return Err(format!("tiling {t:?} does not fit the {level:?} registers"));
    }
    if let Some((_, bc, _)) = spec.bias {
        if bc > 1 {
            return Err("bias column stride must be 0 or 1".into());
        }
    }
    let mut g = Gen::new(spec, level, t).map_err(|e| e.0)?;
    g.function().map_err(|e| e.0)?;
    g.finish().map_err(|e| e.0)
}

// ---------------------------------------------------------------------------
// Code generation.

/// Assembler errors (iced's, or an offset that does not fit 32 bits).
#[derive(Debug)]
pub(crate) struct AsmError(String);

impl From<IcedError> for AsmError {
    fn from(e: IcedError) -> Self {
        AsmError(e.to_string())
    }
}

/// Registers of the driver loops (see the module docs for the loop nest).
mod reg {
    use iced_x86::code_asm::*;
    /// A at (row block, K block).
    pub const A_BLK: AsmRegister64 = rdi;
    /// B at K block, full panels.
    pub const B_BLK: AsmRegister64 = rsi;
    /// C at row block.
    pub const C_BLK: AsmRegister64 = rdx;
    /// bias at row block.
    pub const BIAS_BLK: AsmRegister64 = rcx;
    pub const A_TILE: AsmRegister64 = r8;
    pub const B_PAN: AsmRegister64 = r9;
    pub const C_TILE: AsmRegister64 = r10;
    pub const BIAS_TILE: AsmRegister64 = r11;
    pub const K_CNT: AsmRegister32 = eax;
    pub const I_CNT: AsmRegister32 = ebx;
    pub const J_CNT: AsmRegister32 = r12d;
    pub const A_RUN: AsmRegister64 = r13;
    pub const B_RUN: AsmRegister64 = r14;
    /// Prefetch pointer into the next B slice (runtime packing).
    pub const PF_RUN: AsmRegister64 = rbp;
}

/// Stack slots (bytes above rsp).
const SLOT_IC: i32 = 0; // row blocks left
const SLOT_KB: i32 = 8; // K blocks left
const SLOT_CPAN: i32 = 16; // C at current panel
const SLOT_BPAN: i32 = 24; // bias at current panel
const SLOT_PF: i32 = 32; // B slice to prefetch while computing on this one
const PACK_OFF: i32 = 64; // runtime B pack buffer

/// One tile to emit: `mr` rows, `nv` vectors, the last of which holds
/// `last_lanes` valid columns (== lanes when the panel is full).
#[derive(Clone, Copy)]
pub(crate) struct TileShape {
    pub mr: usize,
    pub nv: usize,
    pub last_lanes: usize,
    /// B row stride in bytes for this panel.
    pub b_step: i64,
    /// B rows hold whole vectors (packed or buffered): no load masks.
    pub b_padded: bool,
    /// B comes from the stack pack buffer.
    pub from_buf: bool,
    /// Row stride (bytes) of the B slice the next pack reads, prefetched
    /// into L2 by the K loop (0: no prefetch).
    pub pf_step: i64,
    /// Pre-packed B: the K loops prefetch the next panel (PF_RUN, advanced
    /// across the row tiles of this panel) into L2.
    pub pf_next: bool,
}

pub(crate) struct Gen<'a> {
    pub a: CodeAssembler,
    pub s: &'a AsmGemm,
    pub level: Level,
    pub t: Tiling,
    /// K blocks: count, regular length, last length.
    pub nkb: usize,
    pub kc: usize,
    pub klast: usize,
    /// Row blocks: count, regular rows, last rows.
    pub nic: usize,
    pub mc: usize,
    pub mlast: usize,
    /// Constant pool labels.
    pub l_alpha: CodeLabel,
    pub l_beta: CodeLabel,
    pub l_mask: CodeLabel,
    /// Instruction index the last label was bound to.
    pub label_at: Option<usize>,
}

/// Checked byte offset for a displacement or immediate.
pub(crate) fn off(elems: usize) -> Result<i32, AsmError> {
    i32::try_from(elems * 4).map_err(|_| AsmError("offset exceeds 2 GiB".into()))
}

/// [`off`] for a signed element offset (displacements below a base).
pub(crate) fn disp(elems: i64) -> Result<i32, AsmError> {
    elems
        .checked_mul(4)
        .and_then(|b| i32::try_from(b).ok())
        .ok_or_else(|| AsmError("offset exceeds 2 GiB".into()))
}

/// zmm register `i`.
pub(crate) fn z(i: usize) -> iced_x86::code_asm::AsmRegisterZmm {
    iced_x86::code_asm::get_zmm(iced_x86::Register::ZMM0 + i as u32).expect("zmm index")
}

impl<'a> Gen<'a> {
    fn new(s: &'a AsmGemm, level: Level, t: &Tiling) -> Result<Self, AsmError> {
        let mut a = CodeAssembler::new(64)?;
        // A bias applied in the epilogue (alpha ≠ 1) is read after partial
        // sums were stored: K blocking would break `bias == C`.
        let late_bias = s.bias.is_some() && s.alpha != 1.0;
        let (nkb, kc, klast) = if s.k <= t.kc.max(1) || late_bias {
            (1, s.k, s.k)
        } else {
            let nkb0 = s.k.div_ceil(t.kc);
            let kc = s.k.div_ceil(nkb0).div_ceil(t.ku) * t.ku;
            let nkb = s.k.div_ceil(kc);
            (nkb, kc, s.k - (nkb - 1) * kc)
        };
        let mc0 = t.mc.max(t.mr);
        let (nic, mc, mlast) = if s.m <= mc0 {
            (1, s.m, s.m)
        } else {
            let mc = mc0 / t.mr * t.mr;
            let nic = s.m.div_ceil(mc);
            (nic, mc, s.m - (nic - 1) * mc)
        };
        let l_alpha = a.create_label();
        let l_beta = a.create_label();
        let l_mask = a.create_label();
        Ok(Gen {
            a,
            s,
            level,
            t: *t,
            nkb,
            kc,
            klast,
            nic,
            mc,
            mlast,
            l_alpha,
            l_beta,
            l_mask,
            label_at: None,
        })
    }

    /// Binds `l` to the next instruction (a `nop` separates two labels that
    /// would land on the same instruction; iced allows one per instruction).
    pub fn bind(&mut self, l: &mut CodeLabel) -> Result<(), AsmError> {
        if self.label_at == Some(self.a.instructions().len()) {
            self.a.nop()?;
        }
        self.label_at = Some(self.a.instructions().len());
        Ok(self.a.set_label(l)?)
    }

    /// With alpha = 1 the bias initializes the accumulators (first K block)
    /// instead of joining in the epilogue: each bias element is read before
    /// the C element at the same place is first written, so `bias` may be C
    /// itself (`C += A·B`) even when K is blocked.
    pub(crate) fn bias_in_init(&self) -> bool {
        self.s.bias.is_some() && self.s.alpha == 1.0
    }

    fn lanes(&self) -> usize {
        self.level.lanes()
    }

    fn nr(&self) -> usize {
        self.t.nv * self.lanes()
    }

    /// Columns in the masked tail panel (0 if none).
    fn n_tail(&self) -> usize {
        self.s.n % self.nr()
    }

    fn n_full_panels(&self) -> usize {
        self.s.n / self.nr()
    }

    /// B row stride (bytes) of full panels and of the tail panel.
    fn b_steps(&self) -> (usize, usize) {
        if self.s.b_packed {
            let lanes = self.lanes();
            (self.nr(), self.n_tail().div_ceil(lanes) * lanes)
        } else {
            (self.s.b_row, self.s.b_row)
        }
    }

    fn function(&mut self) -> Result<(), AsmError> {
        use reg::*;
        let s = self.s;
        if s.m == 0 || s.n == 0 {
            self.a.ret()?;
            return Ok(());
        }
        for r in [rbx, rbp, r12, r13, r14, r15] {
            self.a.push(r)?;
        }
        // Frame: slots, then the 64-byte aligned pack buffer. Pages are
        // touched top-down so a guard page is never skipped.
        self.a.mov(r15, rsp)?;
        let total = PACK_OFF as usize + self.pack_bytes();
        let mut left = total;
        while left > 4096 {
            self.a.sub(rsp, 4096)?;
            self.a.or(dword_ptr(rsp), 0)?;
            left -= 4096;
        }
        self.a.sub(rsp, left as i32)?;
        self.a.and(rsp, -64)?;
        self.level_setup()?;

        let brow = s.bias.map(|b| b.0).unwrap_or(0);
        let mut l_ic = self.a.create_label();
        self.a.mov(qword_ptr(rsp + SLOT_IC), self.nic as i32)?;
        self.bind(&mut l_ic)?;
        self.body()?;
        if self.nic > 1 {
            self.a.add(A_BLK, off(self.mc * s.a_row)?)?;
            self.a.add(C_BLK, off(self.mc * s.c_row)?)?;
            if brow > 0 {
                self.a.add(BIAS_BLK, off(self.mc * brow)?)?;
            }
            self.a.dec(qword_ptr(rsp + SLOT_IC))?;
            self.a.jne(l_ic)?;
        }
        self.a.mov(rsp, r15)?;
        for r in [r15, r14, r13, r12, rbp, rbx] {
            self.a.pop(r)?;
        }
        self.a.vzeroupper()?;
        self.a.ret()?;
        self.constants()?;
        Ok(())
    }

    /// Bytes of the runtime B pack buffer (0 without runtime packing).
    fn pack_bytes(&self) -> usize {
        let bytes = self.kc.max(self.klast) * self.nr() * 4;
        if self.t.pack && !self.s.b_packed && bytes <= MAX_PACK_BYTES {
            bytes
        } else {
            0
        }
    }

    /// All column panels of one row block.
    fn body(&mut self) -> Result<(), AsmError> {
        use reg::*;
        let s = self.s;
        let (bstep_full, bstep_tail) = self.b_steps();
        let nr = self.nr();
        let lanes = self.lanes();
        let bcol = s.bias.map(|b| b.1).unwrap_or(0);
        self.a.mov(B_PAN, B_BLK)?;
        self.a.mov(qword_ptr(rsp + SLOT_CPAN), C_BLK)?;
        self.a.mov(qword_ptr(rsp + SLOT_BPAN), BIAS_BLK)?;
        let npf = self.n_full_panels();
        let pf_next = self.pf_next_panel();
        if npf > 0 {
            let mut l_j = self.a.create_label();
            self.a.mov(J_CNT, npf as u32)?;
            self.bind(&mut l_j)?;
            if pf_next {
                self.a.lea(PF_RUN, ptr(B_PAN + off(nr * s.k)?))?;
            }
            self.panel(TileShape {
                mr: self.t.mr,
                nv: self.t.nv,
                last_lanes: lanes,
                b_step: (bstep_full * 4) as i64,
                b_padded: s.b_packed,
                from_buf: false,
                pf_step: 0,
                pf_next,
            })?;
            let pstride = if s.b_packed { nr * s.k } else { nr };
            self.a.add(B_PAN, off(pstride)?)?;
            self.a.add(qword_ptr(rsp + SLOT_CPAN), off(nr)?)?;
            if bcol == 1 {
                self.a.add(qword_ptr(rsp + SLOT_BPAN), off(nr)?)?;
            }
            self.a.dec(J_CNT)?;
            self.a.jne(l_j)?;
        }
        let nt = self.n_tail();
        if nt > 0 {
            let nv = nt.div_ceil(lanes);
            self.panel(TileShape {
                mr: self.t.mr,
                nv,
                last_lanes: nt - (nv - 1) * lanes,
                b_step: (bstep_tail * 4) as i64,
                b_padded: s.b_packed,
                from_buf: false,
                pf_step: 0,
                pf_next: false,
            })?;
        }
        Ok(())
    }

    /// Prefetch the next pre-packed B panel while the row tiles run over
    /// this one. Constant weights larger than L2 (BERT's FFN, 9 MiB) come
    /// from L3 on the first row tile of each panel, which then waits on a
    /// single sequential stream; spread over the panel's row tiles the
    /// same lines arrive early at a fraction of the rate.
    fn pf_next_panel(&self) -> bool {
        self.s.b_packed
            && self.t.prefetch
            && self.mc.max(self.mlast) >= 2 * self.t.mr
            && (self.n_full_panels() >= 2 || self.n_tail() > 0)
    }

    /// One column panel of one row block: its K blocks, each (optionally
    /// packed into the stack buffer first) over all row tiles.
    fn panel(&mut self, sh: TileShape) -> Result<(), AsmError> {
        use reg::*;
        let s = self.s;
        let mut l_kb = self.a.create_label();
        if self.nkb > 1 {
            self.a.mov(qword_ptr(rsp + SLOT_KB), self.nkb as i32)?;
            self.bind(&mut l_kb)?;
        }
        let tsh = if self.pack_bytes() > 0 {
            self.pack(sh)?;
            // Next slice: the next K block of this panel, or after the last
            // one the first K block of the next panel.
            let next_kb = self.kc as i64 * sh.b_step;
            let next_panel = (self.nr() * 4) as i64 - (self.nkb as i64 - 1) * next_kb;
            let fits = |d: i64| i32::try_from(d).is_ok();
            let prefetch = self.t.prefetch && fits(next_kb) && fits(next_panel);
            if prefetch {
                {
                    self.a.lea(PF_RUN, ptr(B_PAN + next_panel))?;
                    if self.nkb > 1 {
                        let mut l = self.a.create_label();
                        self.a.cmp(qword_ptr(rsp + SLOT_KB), 1)?;
                        self.a.je(l)?;
                        self.a.lea(PF_RUN, ptr(B_PAN + next_kb))?;
                        self.bind(&mut l)?;
                    }
                    self.a.mov(qword_ptr(rsp + SLOT_PF), PF_RUN)?;
                }
            }
            let lanes = self.lanes();
            TileShape {
                b_step: (sh.nv * lanes * 4) as i64,
                b_padded: true,
                from_buf: true,
                pf_step: if prefetch { sh.b_step } else { 0 },
                ..sh
            }
        } else {
            sh
        };
        self.rows(tsh)?;
        if self.nkb > 1 {
            self.a.add(A_BLK, off(self.kc * s.a_col)?)?;
            self.a.add(B_PAN, (self.kc as i64 * sh.b_step) as i32)?;
            self.a.dec(qword_ptr(rsp + SLOT_KB))?;
            self.a.jne(l_kb)?;
            let back = self.nkb * self.kc;
            self.a.sub(A_BLK, off(back * s.a_col)?)?;
            self.a.sub(B_PAN, (back as i64 * sh.b_step) as i32)?;
        }
        Ok(())
    }

    /// Copies the current K block of the panel at B_PAN into the stack
    /// buffer, rows of `nv` whole vectors (the column tail zero-filled).
    fn pack(&mut self, sh: TileShape) -> Result<(), AsmError> {
        use reg::*;
        self.a.mov(A_RUN, B_PAN)?;
        self.a.lea(B_RUN, ptr(rsp + PACK_OFF))?;
        self.a.mov(K_CNT, self.kc as u32)?;
        if self.klast != self.kc {
            let mut l = self.a.create_label();
            self.a.cmp(qword_ptr(rsp + SLOT_KB), 1)?;
            self.a.jne(l)?;
            self.a.mov(K_CNT, self.klast as u32)?;
            self.bind(&mut l)?;
        }
        if self.kc.min(self.klast) == 0 {
            return Ok(());
        }
        if self.level == Level::Avx2Fma {
            self.load_mask(sh)?;
        }
        let mut l_p = self.a.create_label();
        self.bind(&mut l_p)?;
        match self.level {
            Level::Avx512 => self.pack_row_512(sh)?,
            Level::Avx2Fma => self.pack_row_256(sh)?,
        }
        self.a.add(A_RUN, sh.b_step as i32)?;
        self.a.add(B_RUN, off(sh.nv * self.lanes())?)?;
        self.a.dec(K_CNT)?;
        self.a.jne(l_p)?;
        Ok(())
    }

    /// All row tiles of one panel.
    fn rows(&mut self, shape: TileShape) -> Result<(), AsmError> {
        use reg::*;
        let s = self.s;
        let mr = self.t.mr;
        let brow = s.bias.map(|b| b.0).unwrap_or(0);
        self.a.mov(A_TILE, A_BLK)?;
        self.a.mov(C_TILE, qword_ptr(rsp + SLOT_CPAN))?;
        self.a.mov(BIAS_TILE, qword_ptr(rsp + SLOT_BPAN))?;
        let cnt = self.mc / mr;
        let cnt_last = self.mlast / mr;
        let tail_last = self.mlast % mr;
        // In a split M, mc is a multiple of mr: only the last block has a short tile.
        let mut l_skip = self.a.create_label();
        if cnt > 0 || cnt_last > 0 {
            self.a.mov(I_CNT, cnt as u32)?;
            if cnt_last != cnt {
                let mut l = self.a.create_label();
                self.a.cmp(qword_ptr(rsp + SLOT_IC), 1)?;
                self.a.jne(l)?;
                self.a.mov(I_CNT, cnt_last as u32)?;
                self.bind(&mut l)?;
                if cnt_last == 0 || cnt == 0 {
                    self.a.test(I_CNT, I_CNT)?;
                    self.a.je(l_skip)?;
                }
            }
            let mut l_i = self.a.create_label();
            self.bind(&mut l_i)?;
            self.tile(TileShape { mr, ..shape })?;
            self.a.add(A_TILE, off(mr * s.a_row)?)?;
            self.a.add(C_TILE, off(mr * s.c_row)?)?;
            if brow > 0 {
                self.a.add(BIAS_TILE, off(mr * brow)?)?;
            }
            self.a.dec(I_CNT)?;
            self.a.jne(l_i)?;
        }
        self.bind(&mut l_skip)?;
        if tail_last > 0 {
            let mut l_end = self.a.create_label();
            if self.nic > 1 {
                self.a.cmp(qword_ptr(rsp + SLOT_IC), 1)?;
                self.a.jne(l_end)?;
            }
            self.tile(TileShape {
                mr: tail_last,
                ..shape
            })?;
            self.bind(&mut l_end)?;
        }
        Ok(())
    }

    /// One register tile over the current K block: init, K loop, store.
    fn tile(&mut self, sh: TileShape) -> Result<(), AsmError> {
        use reg::*;
        let s = self.s;
        let ku = self.t.ku;
        let nkb = self.nkb;
        // Init: zeros in the first K block, the stored partial sums after.
        if nkb > 1 {
            let mut l_load = self.a.create_label();
            let mut l_done = self.a.create_label();
            self.a.cmp(qword_ptr(rsp + SLOT_KB), nkb as i32)?;
            self.a.jne(l_load)?;
            self.zero_acc(sh)?;
            self.a.jmp(l_done)?;
            self.bind(&mut l_load)?;
            self.load_acc(sh)?;
            self.bind(&mut l_done)?;
        } else {
            self.zero_acc(sh)?;
        }
        self.a.mov(A_RUN, A_TILE)?;
        if sh.pf_step != 0 {
            self.a.mov(PF_RUN, qword_ptr(rsp + SLOT_PF))?;
        }
        if sh.from_buf {
            self.a.lea(B_RUN, ptr(rsp + PACK_OFF))?;
        } else {
            self.a.mov(B_RUN, B_PAN)?;
        }
        let (it, it_last) = (self.kc / ku, self.klast / ku);
        let mut l_kend = self.a.create_label();
        if it > 0 || it_last > 0 {
            self.a.mov(K_CNT, it as u32)?;
            if it_last != it {
                let mut l = self.a.create_label();
                self.a.cmp(qword_ptr(rsp + SLOT_KB), 1)?;
                self.a.jne(l)?;
                self.a.mov(K_CNT, it_last as u32)?;
                self.bind(&mut l)?;
                if it_last == 0 {
                    self.a.test(K_CNT, K_CNT)?;
                    self.a.je(l_kend)?;
                }
            }
            let mut l_k = self.a.create_label();
            self.bind(&mut l_k)?;
            for u in 0..ku {
                self.kstep(sh, u)?;
            }
            if sh.pf_next {
                // As many lines per ku K steps as one K row of the panel
                // has (two for 32 columns): the next panel is covered
                // within ku row tiles.
                let lines = (self.nr() * 4).div_ceil(64);
                for l in 0..lines {
                    self.a.prefetcht1(byte_ptr(PF_RUN + 64 * l as i32))?;
                }
                self.a.add(PF_RUN, 64 * lines as i32)?;
            }
            self.a.add(A_RUN, off(ku * s.a_col)?)?;
            self.a.add(B_RUN, sh.b_step as i32 * ku as i32)?;
            if sh.pf_step != 0 {
                self.a.add(PF_RUN, (sh.pf_step * ku as i64) as i32)?;
            }
            self.a.dec(K_CNT)?;
            self.a.jne(l_k)?;
        }
        self.bind(&mut l_kend)?;
        let rem = self.klast % ku;
        if rem > 0 {
            let mut l_norem = self.a.create_label();
            if nkb > 1 {
                self.a.cmp(qword_ptr(rsp + SLOT_KB), 1)?;
                self.a.jne(l_norem)?;
            }
            for u in 0..rem {
                self.kstep(sh, u)?;
            }
            self.bind(&mut l_norem)?;
        }
        // Store: raw partial sums, or the epilogue in the last K block.
        if nkb > 1 {
            let mut l_raw = self.a.create_label();
            let mut l_done = self.a.create_label();
            self.a.cmp(qword_ptr(rsp + SLOT_KB), 1)?;
            self.a.jne(l_raw)?;
            self.epilogue(sh, true)?;
            self.a.jmp(l_done)?;
            self.bind(&mut l_raw)?;
            self.epilogue(sh, false)?;
            self.bind(&mut l_done)?;
        } else {
            self.epilogue(sh, true)?;
        }
        Ok(())
    }

    fn level_setup(&mut self) -> Result<(), AsmError> {
        match self.level {
            Level::Avx512 => self.setup_512(),
            Level::Avx2Fma => Ok(()),
        }
    }
    fn zero_acc(&mut self, sh: TileShape) -> Result<(), AsmError> {
        match self.level {
            Level::Avx512 => self.zero_acc_512(sh),
            Level::Avx2Fma => self.zero_acc_256(sh),
        }
    }
    fn load_acc(&mut self, sh: TileShape) -> Result<(), AsmError> {
        match self.level {
            Level::Avx512 => self.load_acc_512(sh),
            Level::Avx2Fma => self.load_acc_256(sh),
        }
    }
    /// K step `u` (0-based within the unrolled body) from A_RUN/B_RUN.
    fn kstep(&mut self, sh: TileShape, u: usize) -> Result<(), AsmError> {
        if sh.pf_step != 0 {
            for v in 0..sh.nv {
                let d = sh.pf_step * u as i64 + (v * self.lanes() * 4) as i64;
                self.a.prefetcht1(byte_ptr(reg::PF_RUN + d))?;
            }
        }
        match self.level {
            Level::Avx512 => self.kstep_512(sh, u),
            Level::Avx2Fma => self.kstep_256(sh, u),
        }
    }
    fn epilogue(&mut self, sh: TileShape, last: bool) -> Result<(), AsmError> {
        match self.level {
            Level::Avx512 => self.epilogue_512(sh, last),
            Level::Avx2Fma => self.epilogue_256(sh, last),
        }
    }

    /// Constant pool after the code: alpha and beta (one lane each for
    /// AVX-512 broadcasts, 8 lanes for AVX2), the AVX2 tail mask.
    fn constants(&mut self) -> Result<(), AsmError> {
        let beta = self.s.bias.map(|b| b.2).unwrap_or(1.0);
        let reps = match self.level {
            Level::Avx512 => 1,
            Level::Avx2Fma => 8,
        };
        let mut l = self.l_alpha;
        self.bind(&mut l)?;
        self.a.dd_f32(&vec![self.s.alpha; reps])?;
        let mut l = self.l_beta;
        self.bind(&mut l)?;
        self.a.dd_f32(&vec![beta; reps])?;
        let mut l = self.l_mask;
        self.bind(&mut l)?;
        let nt = self.n_tail();
        let nt = if nt == 0 {
            0
        } else {
            (nt - 1) % self.lanes() + 1
        };
        let mask: Vec<u32> = (0..8).map(|i| if i < nt { !0 } else { 0 }).collect();
        self.a.dd(&mask)?;
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, AsmError> {
        Ok(self.a.assemble(0)?)
    }
}
