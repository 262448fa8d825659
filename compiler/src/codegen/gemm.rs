//! Register-blocked f32x4 GEMM: `C = alpha·A·B + beta·bias` with a 4×8
//! accumulator tile (8 vector registers, leaving room for A broadcasts and
//! B loads within the 16 xmm / 32 NEON registers).
//!
//! Loop order is column-panel outer, row-block inner, so one K×8 panel of B
//! stays in L1 while A streams from L2. B must be row-contiguous (column
//! stride 1); callers transpose or pre-pack otherwise.

use super::kb::{InsExt, Kb, PTR, VF};
use super::parallel;
use super::x86;
use crate::ir::GemmTile;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

pub const MR: usize = 4;
pub const NR_VECS: usize = 2;

/// Element strides of a row-major-ish matrix view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub row: usize,
    pub col: usize,
}

/// Epilogue addend: `beta·bias[i·row + j·col]` with `col` ∈ {0, 1}.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bias {
    pub strides: Strides,
    pub beta: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Strides,
    /// Row stride of B (its column stride is 1).
    pub b_row: usize,
    /// Row stride of C (column stride 1).
    pub c_row: usize,
    pub alpha: f32,
    pub bias: Option<Bias>,
    pub relu: bool,
    /// The optimizer's blocking for the assembled kernel (None: its rule).
    pub tile: Option<GemmTile>,
}

struct Ptrs {
    a: Value,
    b: Value,
    c: Value,
    bias: Option<Value>,
}

/// A compile-time B (weights): the assembled kernels read it pre-packed.
pub struct ConstB<'t> {
    /// Identifies the tensor (and layout) across call sites.
    pub key: String,
    /// `[K, N]` row-major, or `[N, K]` when `transposed`.
    pub data: &'t [f32],
    pub transposed: bool,
}

/// One dense GEMM `s` per entry of a broadcast `batch`: entry index `i`
/// (per dim) places A at `i·sa·(M·K)`, B at `i·sb·(K·N)`, C at
/// `i·sy·(M·N)` elements (strides 0 on broadcast dims). Large batches run
/// their entries as parallel tasks; otherwise entries run in order and each
/// GEMM may split itself.
#[allow(clippy::too_many_arguments)]
pub fn emit_batched(
    k: &mut Kb,
    s: &GemmSpec,
    batch: &[usize],
    sa: &[usize],
    sb: &[usize],
    sy: &[usize],
    a: Value,
    b: Value,
    y: Value,
) {
    let nb: usize = batch.iter().product();
    let (asz, bsz, ysz) = (s.m * s.k, s.k * s.n, s.m * s.n);
    let tasks = parallel::tasks_for(
        nb,
        nb * s.m * s.n * s.k,
        2 * MIN_TASK_MACS,
        MIN_TASK_MACS,
        parallel::MAX_TASKS,
    );
    parallel::parallel_items(k, nb, tasks, &[a, b, y], &mut |k, p, e, _| {
        let (mut pa, mut pb, mut py) = (p[0], p[1], p[2]);
        let mut below = nb;
        for d in 0..batch.len() {
            below /= batch[d].max(1);
            let i = if below == 1 {
                e
            } else {
                k.b.ins().udiv_imm_u(e, below as i64)
            };
            let i = if d == 0 {
                i
            } else {
                k.b.ins_urem(i, batch[d] as i64)
            };
            pa = k.index(pa, i, (4 * sa[d] * asz) as i64);
            pb = k.index(pb, i, (4 * sb[d] * bsz) as i64);
            py = k.index(py, i, (4 * sy[d] * ysz) as i64);
        }
        emit(k, s, pa, pb, py, None);
    });
}

/// Where B is read from.
#[derive(Clone, Copy)]
enum B {
    /// `[K, N]` rows with stride `b_row`, column stride 1.
    Rows(Value),
    /// Pre-packed for the assembled kernel of the whole GEMM ([`x86::pack_b`]).
    Packed(Value),
}

/// Emits the whole GEMM for one (batch) instance: a call to an assembled
/// kernel when the target has one (x86-64 AVX2/AVX-512), else f32x4 loops;
/// split over the thread pool when it is large (see [`plan_split`]).
pub fn emit(k: &mut Kb, s: &GemmSpec, a: Value, b: Value, c: Value, bias: Option<Value>) {
    run(k, s, a, B::Rows(b), c, bias, false);
}

/// [`emit`] for the small products of a hot loop (attention blocks): the
/// assembled kernel even below [`TINY_GEMM_MACS`], where a loop full of
/// f32x4 GEMMs is slower than a call to zmm/ymm code.
pub fn emit_small(k: &mut Kb, s: &GemmSpec, a: Value, b: Value, c: Value, bias: Option<Value>) {
    run(k, s, a, B::Rows(b), c, bias, true);
}

/// The GEMM with B a constant: calls to an assembled kernel that reads B
/// pre-packed from its own data object. Returns false (emitting nothing)
/// when no assembled kernel is available; the caller then materializes B
/// and uses [`emit`].
pub fn emit_const_b(
    k: &mut Kb,
    s: &GemmSpec,
    a: Value,
    b: &ConstB,
    c: Value,
    bias: Option<Value>,
) -> bool {
    if !asm_ok(s, bias.is_some(), false) {
        return false;
    }
    let Some(be) = k.asm() else {
        return false;
    };
    if be.gemm(&asm_spec(s, true)).is_none() {
        return false;
    }
    let Some(bp) = packed_const_b(k, s, b) else {
        return false;
    };
    run(k, s, a, B::Packed(bp), c, bias, false)
}

/// The address of `b` packed for the assembled kernel of the whole GEMM
/// `s` (one data object per tensor, level and tiling, shared by every call
/// site and column piece); None without an assembled backend.
fn packed_const_b(k: &mut Kb, s: &GemmSpec, b: &ConstB) -> Option<Value> {
    packed_const_bs(k, s, std::slice::from_ref(b)).map(|(p, _)| p)
}

/// [`packed_const_b`] for a batch of B's of the same GEMM `s`, packed one
/// after the other into one data object (keyed by the first): the address
/// and the elements from one packed B to the next, so a loop can pick its
/// B by index at run time.
pub fn packed_const_bs(k: &mut Kb, s: &GemmSpec, bs: &[ConstB]) -> Option<(Value, usize)> {
    let be = k.asm()?;
    let level = be.level();
    let spec = asm_spec(s, true);
    let t = x86::tiling(&spec, level);
    let dense = x86::AsmGemm {
        b_row: s.n,
        ..spec.clone()
    };
    let len = x86::packed_b_len(&dense, level, &t);
    let key = format!(
        "{} ×{} {level:?} {}x{}x{} nv{}",
        bs.first()?.key,
        bs.len(),
        s.m,
        s.n,
        s.k,
        t.nv
    );
    let mut make = || {
        let (kk, n) = (s.k, s.n);
        let mut out = Vec::with_capacity(4 * len * bs.len());
        for b in bs {
            let rows: Vec<f32> = if b.transposed {
                (0..kk * n).map(|e| b.data[(e % n) * kk + e / n]).collect()
            } else {
                b.data[..kk * n].to_vec()
            };
            out.extend(
                x86::pack_b(&dense, level, &t, &rows)
                    .iter()
                    .flat_map(|x| x.to_le_bytes()),
            );
        }
        out
    };
    let id = be.data(&key, &mut make)?;
    let gv = x86::backend::import_data(k.b.func, id);
    Some((k.b.ins().symbol_value(PTR, gv), len))
}

/// Columns `at..at + len` of [`emit_const_b`]'s product (B packed whole),
/// serially: for callers that split one product (or a chain of them) into
/// column tasks themselves. `at` must start a panel of the whole GEMM;
/// [`const_b_cols_ok`] checks `len` first. False (nothing emitted) when
/// unavailable.
#[allow(clippy::too_many_arguments)]
pub fn emit_const_b_cols(
    k: &mut Kb,
    s: &GemmSpec,
    a: Value,
    b: &ConstB,
    c: Value,
    bias: Option<Value>,
    at: Value,
    len: usize,
) -> bool {
    if !const_b_cols_ok(k, s, bias.is_some(), len) {
        return false;
    }
    let Some(bp) = packed_const_b(k, s, b) else {
        return false;
    };
    // Whole panels are K-major blocks of NR columns (as in a column split).
    let bp = k.index(bp, at, 4 * s.k as i64);
    let c = k.index(c, at, 4);
    let bias_col = s.bias.map_or(0, |x| x.strides.col);
    let bias = bias.map(|q| k.index(q, at, 4 * bias_col as i64));
    let sub = GemmSpec {
        n: len,
        ..s.clone()
    };
    call_one(k, &sub, a, B::Packed(bp), c, bias, true)
}

/// Whether [`emit_const_b_cols`] can run `len`-column pieces of `s`: the
/// whole and the piece assemble with the same panel width, and `len` is
/// whole panels.
pub fn const_b_cols_ok(k: &mut Kb, s: &GemmSpec, has_bias: bool, len: usize) -> bool {
    if !asm_ok(s, has_bias, false) {
        return false;
    }
    let Some(be) = k.asm() else { return false };
    let level = be.level();
    let whole = asm_spec(s, true);
    let sub = asm_spec(
        &GemmSpec {
            n: len,
            ..s.clone()
        },
        true,
    );
    let (tw, ts) = (x86::tiling(&whole, level), x86::tiling(&sub, level));
    tw.nv == ts.nv
        && len.is_multiple_of(tw.nv * level.lanes())
        && be.gemm(&whole).is_some()
        && be.gemm(&sub).is_some()
}

/// Panel width (columns) of B in [`x86::pack_b`]'s layout when `s` runs on
/// an assembled AVX-512 kernel reading B pre-packed, so a producer (im2col)
/// can write that layout itself; None otherwise.
///
/// Only whether the epilogue is supported matters here: the bias pointer is
/// needed by [`emit_packed_b`], not yet (a fused residual, `bias == C`, has
/// no pointer before its chunk's C is known).
pub fn packed_b_nr(k: &mut Kb, s: &GemmSpec) -> Option<usize> {
    if !asm_ok(s, s.bias.is_some(), false) {
        return None;
    }
    let be = k.asm()?;
    let level = be.level();
    if level != x86::Level::Avx512 {
        return None;
    }
    let spec = asm_spec(s, true);
    be.gemm(&spec)?;
    Some(x86::tiling(&spec, level).nv * level.lanes())
}

/// An assembled kernel with pre-packed constant B exists for `s`
/// ([`emit_const_b`] will not decline).
pub fn const_b_available(k: &mut Kb, s: &GemmSpec, bias: Option<Value>) -> bool {
    asm_ok(s, bias.is_some(), false)
        && k.asm()
            .is_some_and(|be| be.gemm(&asm_spec(s, true)).is_some())
}

/// The GEMM with B already in [`x86::pack_b`]'s layout at `b` (run time
/// data); only after [`packed_b_nr`] said yes.
pub fn emit_packed_b(k: &mut Kb, s: &GemmSpec, a: Value, b: Value, c: Value, bias: Option<Value>) {
    assert!(
        s.bias.is_none() || bias.is_some(),
        "packed-B GEMM with a bias spec but no bias pointer"
    );
    // Small products too: a packed B exists only for the assembled kernel.
    let ok = run(k, s, a, B::Packed(b), c, bias, true);
    assert!(ok, "packed-B GEMM without an assembled kernel");
}

/// The assembled kernels support this epilogue with these arguments.
fn asm_ok(s: &GemmSpec, has_bias: bool, small: bool) -> bool {
    // Tiny products (attention with small heads) cost less inline than a
    // call plus run-time packing of B, unless the caller asks (`small`).
    let tiny = !small && s.m * s.n * s.k < TINY_GEMM_MACS;
    !(tiny || s.bias.is_some_and(|x| x.strides.col > 1) || (s.bias.is_some() && !has_bias))
}

/// Below this many multiply-adds a GEMM stays in inline Cranelift code.
const TINY_GEMM_MACS: usize = 48 * 1024;

/// An `m×n×k` product this small runs inline (Cranelift), not on the
/// assembled kernels: their tilings do not apply to it.
pub fn runs_inline(m: usize, n: usize, k: usize) -> bool {
    m.saturating_mul(n).saturating_mul(k) < TINY_GEMM_MACS
}

fn asm_spec(s: &GemmSpec, b_packed: bool) -> x86::AsmGemm {
    x86::AsmGemm {
        m: s.m,
        n: s.n,
        k: s.k,
        a_row: s.a.row,
        a_col: s.a.col,
        b_row: s.b_row,
        c_row: s.c_row,
        alpha: s.alpha,
        bias: s.bias.map(|x| (x.strides.row, x.strides.col, x.beta)),
        relu: s.relu,
        b_packed,
        tile: s.tile,
    }
}

/// One call for the GEMM `s` (no splitting); false only for packed B
/// without an assembled kernel.
/// One call for the GEMM `s` (no splitting): the assembled kernel when
/// `asm` (and it assembles), else Cranelift code. False only for packed B
/// without an assembled kernel.
fn call_one(
    k: &mut Kb,
    s: &GemmSpec,
    a: Value,
    b: B,
    c: Value,
    bias: Option<Value>,
    asm: bool,
) -> bool {
    if asm {
        let packed = matches!(b, B::Packed(_));
        let f = k.asm().and_then(|be| be.gemm(&asm_spec(s, packed)));
        if let Some((fid, sig)) = f {
            let fref = x86::backend::import_function(k.b.func, fid, sig);
            let bias = match bias {
                Some(p) if s.bias.is_some() => p,
                _ => k.iconst(0),
            };
            let (B::Rows(bp) | B::Packed(bp)) = b;
            k.b.ins().call(fref, &[a, bp, c, bias]);
            return true;
        }
    }
    match b {
        B::Rows(bp) => {
            emit_cranelift(k, s, a, bp, c, bias);
            true
        }
        B::Packed(_) => false,
    }
}

/// Work below this many multiply-adds per task is not worth a task.
const MIN_TASK_MACS: usize = 1 << 18;
/// Most tasks one GEMM splits into: every task is a sub-GEMM with its own
/// packing and A (or B) reads, so fewer and larger than elementwise tasks.
const MAX_GEMM_TASKS: usize = 8;

/// A GEMM cut into `tasks` blocks of `block` rows (or columns), the last
/// one `tail` long. Blocks are whole register tiles (rows) or column
/// panels, so the sub-GEMMs share the tiling — and pre-packed B — of the
/// whole GEMM, and at most two distinct kernels (block, tail) are made.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Split {
    rows: bool,
    tasks: usize,
    block: usize,
    tail: usize,
}

impl Split {
    fn sub(&self, s: &GemmSpec, len: usize) -> GemmSpec {
        if self.rows {
            GemmSpec {
                m: len,
                ..s.clone()
            }
        } else {
            GemmSpec {
                n: len,
                ..s.clone()
            }
        }
    }
}

/// How to split `s` over threads: columns (panels) when N ≥ M, so every
/// task rereads the smaller operand A, else rows. None when small.
fn plan_split(s: &GemmSpec, level: Option<x86::Level>) -> Option<Split> {
    let macs = s.m * s.n * s.k;
    let want = (macs / MIN_TASK_MACS).min(MAX_GEMM_TASKS);
    if want < 2 {
        return None;
    }
    let (nr, mr) = match level {
        Some(l) => {
            let t = x86::tiling(&asm_spec(s, false), l);
            (t.nv * l.lanes(), t.mr)
        }
        None => (NR_VECS * 4, MR),
    };
    let cols = || {
        let panels = s.n.div_ceil(nr);
        let q = panels.div_ceil(want);
        let tasks = panels.div_ceil(q);
        (tasks >= 2).then(|| Split {
            rows: false,
            tasks,
            block: q * nr,
            tail: s.n - (tasks - 1) * q * nr,
        })
    };
    let rows = || {
        let units = s.m / mr.max(1);
        let block = units.div_ceil(want) * mr;
        let mut tasks = s.m.div_ceil(block.max(1));
        // A tail shorter than a tile joins the block before it (its tiling,
        // and so the packed B layout, would differ).
        if tasks >= 2 && s.m - (tasks - 1) * block < mr {
            tasks -= 1;
        }
        (units >= 2 && tasks >= 2).then(|| Split {
            rows: true,
            tasks,
            block,
            tail: s.m - (tasks - 1) * block,
        })
    };
    if s.n >= s.m {
        cols().or_else(rows)
    } else {
        rows().or_else(cols)
    }
}

/// The GEMM, split over the kernel's threads when worth it.
fn run(
    k: &mut Kb,
    s: &GemmSpec,
    a: Value,
    b: B,
    c: Value,
    bias: Option<Value>,
    small: bool,
) -> bool {
    // The whole GEMM decides the code path (assembled or Cranelift) and the
    // pieces of a split all take the same one: the two paths round the
    // epilogue differently, and results must not depend on threads.
    let asm = asm_ok(s, bias.is_some(), small) && k.asm().is_some();
    if k.threads.is_none() {
        return call_one(k, s, a, b, c, bias, asm);
    }
    let level = if asm {
        k.asm().map(|be| be.level())
    } else {
        None
    };
    let Some(sp) = plan_split(s, level) else {
        return call_one(k, s, a, b, c, bias, asm);
    };
    if asm {
        // Every piece must assemble (else it would fall back to Cranelift),
        // and with pre-packed B read the panels of the whole GEMM's packing
        // (same panel width).
        let packed = matches!(b, B::Packed(_));
        let nv = |spec: &x86::AsmGemm| level.map(|l| x86::tiling(spec, l).nv);
        let whole = asm_spec(s, packed);
        let mut all = k.asm().and_then(|be| be.gemm(&whole)).is_some();
        // (Only pre-packed B ties a piece to the whole's panel width: each
        // element is a k-ordered FMA chain whatever the tiling.)
        for len in [sp.block, sp.tail] {
            let spec = asm_spec(&sp.sub(s, len), packed);
            all &= (!packed || nv(&spec) == nv(&whole))
                && k.asm().and_then(|be| be.gemm(&spec)).is_some();
        }
        if !all {
            return call_one(k, s, a, b, c, bias, asm);
        }
    } else if let B::Packed(_) = b {
        return false;
    }
    let packed = matches!(b, B::Packed(_));
    let (B::Rows(bp) | B::Packed(bp)) = b;
    let mut caps = vec![a, bp, c];
    let with_bias = s.bias.is_some() && bias.is_some();
    if with_bias {
        caps.extend(bias);
    }
    // Pointers of the piece starting at row/column `at` (a Value).
    let piece = |k: &mut Kb, p: &[Value], at: Value| -> (Value, B, Value, Option<Value>) {
        let bias = with_bias.then(|| p[3]);
        let bias_st = s
            .bias
            .map(|x| x.strides)
            .unwrap_or(Strides { row: 0, col: 0 });
        if sp.rows {
            let a = k.index(p[0], at, 4 * s.a.row as i64);
            let c = k.index(p[2], at, 4 * s.c_row as i64);
            let bias = bias.map(|q| k.index(q, at, 4 * bias_st.row as i64));
            let b = if packed {
                B::Packed(p[1])
            } else {
                B::Rows(p[1])
            };
            (a, b, c, bias)
        } else {
            let a = p[0];
            let b = if packed {
                // Whole panels are K-major blocks of NR columns.
                B::Packed(k.index(p[1], at, 4 * s.k as i64))
            } else {
                B::Rows(k.index(p[1], at, 4))
            };
            let c = k.index(p[2], at, 4);
            let bias = bias.map(|q| k.index(q, at, 4 * bias_st.col as i64));
            (a, b, c, bias)
        }
    };
    let body = &mut |k: &mut Kb, p: &[Value], t: Value, _slot: Value| {
        let one = |k: &mut Kb, len: usize, at: Value| {
            let (a, b, c, bias) = piece(k, p, at);
            call_one(k, &sp.sub(s, len), a, b, c, bias, asm);
        };
        let last_at = ((sp.tasks - 1) * sp.block) as i64;
        parallel::last_or_rest(
            k,
            t,
            sp.tasks,
            &mut |k, last| {
                if last {
                    let at = k.iconst(last_at);
                    one(k, sp.tail, at);
                } else {
                    let at = k.b.ins().imul_imm_s(t, sp.block as i64);
                    one(k, sp.block, at);
                }
            },
            sp.tail != sp.block,
        );
    };
    let serial = &mut |k: &mut Kb| {
        call_one(k, s, a, b, c, bias, asm);
    };
    parallel::parallel(k, sp.tasks, &caps, body, Some(serial));
    true
}

/// The f32x4 Cranelift GEMM.
fn emit_cranelift(k: &mut Kb, s: &GemmSpec, a: Value, b: Value, c: Value, bias: Option<Value>) {
    let p = Ptrs { a, b, c, bias };
    let nr = NR_VECS * 4;
    let n_full = s.n / nr * nr;
    let m_full = s.m / MR * MR;
    let m_rem = s.m - m_full;
    // Full-width column panels.
    k.for_range(0, n_full as i64, nr as i64, |k, j0| {
        k.for_range(0, m_full as i64, MR as i64, |k, i0| {
            tile(k, s, &p, i0, j0, MR, NR_VECS, VF)
        });
        if m_rem > 0 {
            let i0 = k.iconst(m_full as i64);
            tile(k, s, &p, i0, j0, m_rem, NR_VECS, VF);
        }
    });
    // One 4-wide panel, then scalar columns.
    let mut j = n_full;
    if s.n - j >= 4 {
        let j0 = k.iconst(j as i64);
        row_blocks(k, s, &p, j0, 1, VF);
        j += 4;
    }
    if j < s.n {
        k.for_range(j as i64, s.n as i64, 1, |k, j0| {
            row_blocks(k, s, &p, j0, 1, F32)
        });
    }
}

fn row_blocks(k: &mut Kb, s: &GemmSpec, p: &Ptrs, j0: Value, nv: usize, ty: Type) {
    let m_full = s.m / MR * MR;
    k.for_range(0, m_full as i64, MR as i64, |k, i0| {
        tile(k, s, p, i0, j0, MR, nv, ty)
    });
    if s.m > m_full {
        let i0 = k.iconst(m_full as i64);
        tile(k, s, p, i0, j0, s.m - m_full, nv, ty);
    }
}

/// One `mr × (nv·width)` tile at (i0, j0): accumulate over K, then the epilogue.
#[allow(clippy::too_many_arguments)]
fn tile(k: &mut Kb, s: &GemmSpec, p: &Ptrs, i0: Value, j0: Value, mr: usize, nv: usize, ty: Type) {
    let w = if ty == VF { 4 } else { 1 };
    let a0 = k.index(p.a, i0, 4 * s.a.row as i64);
    let b0 = k.index(p.b, j0, 4);
    let zero = k.cst(ty, 0.0);
    let acc: Vec<_> = (0..mr * nv).map(|_| k.var(ty, zero)).collect();
    k.for_range(0, s.k as i64, 1, |k, kk| {
        let pa = k.index(a0, kk, 4 * s.a.col as i64);
        let pb = k.index(b0, kk, 4 * s.b_row as i64);
        let bv: Vec<Value> = (0..nv)
            .map(|v| k.load(ty, pb, 4 * (v * w) as i64))
            .collect();
        for r in 0..mr {
            let a = k.load(F32, pa, 4 * (r * s.a.row) as i64);
            let a = if ty == VF { k.splat(a) } else { a };
            for v in 0..nv {
                let cur = k.get(acc[r * nv + v]);
                let nxt = k.fma(a, bv[v], cur);
                k.set(acc[r * nv + v], nxt);
            }
        }
    });
    let c0 = k.index(p.c, i0, 4 * s.c_row as i64);
    let c0 = k.index(c0, j0, 4);
    let bias0 = match (p.bias, s.bias) {
        (Some(bp), Some(bs)) => {
            let q = k.index(bp, i0, 4 * bs.strides.row as i64);
            let q = if bs.strides.col == 0 {
                q
            } else {
                k.index(q, j0, 4)
            };
            Some((q, bs))
        }
        _ => None,
    };
    for r in 0..mr {
        for v in 0..nv {
            let mut y = k.get(acc[r * nv + v]);
            if s.alpha != 1.0 {
                let al = k.cst(ty, s.alpha);
                y = k.mul(y, al);
            }
            if let Some((q, bs)) = bias0 {
                let row_off = 4 * (r * bs.strides.row) as i64;
                let bv = if bs.strides.col == 0 {
                    let x = k.load(F32, q, row_off);
                    if ty == VF {
                        k.splat(x)
                    } else {
                        x
                    }
                } else {
                    k.load(ty, q, row_off + 4 * (v * w) as i64)
                };
                y = if bs.beta == 1.0 {
                    k.add(y, bv)
                } else {
                    let be = k.cst(ty, bs.beta);
                    k.fma(bv, be, y)
                };
            }
            if s.relu {
                let z = k.cst(ty, 0.0);
                y = k.max(y, z);
            }
            k.store(y, c0, 4 * (r * s.c_row + v * w) as i64);
        }
    }
}
