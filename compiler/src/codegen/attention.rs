//! Fused attention, FlashAttention-style: for each block of query rows,
//! stream over blocks of keys. Per key block the scores S = scale·Q·Kᵀ come
//! from the GEMM kernel into a small scratch tile, an online softmax keeps a
//! running max `m` and sum `l` per row (rescaling the output rows when the
//! max grows), and O += P·V is a second GEMM accumulating into the output.
//! Scratch is one MQ×BK tile, three MQ vectors and the MQ×Dv output
//! accumulator (where the result's rows are not dense) — never Lq×Lk.
//!
//! q, kᵀ, v and the result are strided views (a stride per batch dim and a
//! row stride, unit columns), so the head-split reshapes/transposes around
//! the op need no copies. A strided output accumulates in scratch and is
//! written to its view once, scaled by 1/l.

use super::gemm::{self, Bias, GemmSpec, Strides};
use super::kb::{InsExt, Kb, VF};
use super::math;
use super::parallel;
use super::x86;
use crate::ir::UnaryOp;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Query rows per block and keys per block.
pub const MQ: usize = 32;
pub const BK: usize = 128;

#[derive(Clone, Debug, PartialEq)]
pub struct AttnGeom {
    /// q's batch dims (all but the last two) and k/v's.
    pub q_batch: Vec<usize>,
    pub kv_batch: Vec<usize>,
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
    pub causal: bool,
    pub softcap: f32,
    /// Element strides of the mask broadcast to [batch…, Lq, Lk].
    pub mask_strides: Option<Vec<usize>>,
    /// q, kᵀ, v, out: element offset and strides (one per batch dim, then
    /// the row stride; columns are contiguous).
    pub views: [(usize, Vec<usize>); 4],
    /// kᵀ viewed with a non-unit column stride (keys spread over rows of a
    /// projection): offset and all strides. It is packed once into scratch
    /// by a strided copy — the transpose kernel it replaces, without the
    /// intermediate buffer — and `views[1]` describes the packed copy.
    pub kt_pack: Option<(usize, Vec<usize>)>,
}

impl AttnGeom {
    fn mq(&self) -> usize {
        MQ.min(self.lq.max(1))
    }
    fn bk(&self) -> usize {
        BK.min(self.lk.max(1))
    }
    /// Scratch of one query block in flight.
    fn slot_bytes(&self) -> usize {
        let acc = if self.out_in_place() {
            0
        } else {
            self.mq() * self.dv
        };
        4 * (self.mq() * self.bk() + 3 * self.mq() + acc)
    }
    /// Output rows dense (row stride Dv, as the assembled softmax update
    /// expects): O accumulates in the result itself, no scratch copy.
    fn out_in_place(&self) -> bool {
        self.row(3) == self.dv
    }
    fn heads(&self) -> usize {
        self.q_batch.iter().product()
    }
    fn query_blocks(&self) -> usize {
        self.lq.div_ceil(self.mq())
    }
    /// Parallel tasks over the (head, query block) items, each with its own
    /// scratch slot.
    pub fn tasks(&self) -> usize {
        let items = self.heads() * self.query_blocks();
        let macs = self.heads() * self.lq * self.lk * (self.d + self.dv);
        parallel::tasks_for(items, macs, 1 << 19, 1 << 18, parallel::MAX_SLOTS)
    }
    /// Row stride of view `i` (q, kᵀ, v, out).
    fn row(&self, i: usize) -> usize {
        self.views[i].1[self.q_batch.len()]
    }
    /// Bytes of the packed kᵀ, rounded to whole cache lines.
    fn pack_bytes(&self) -> usize {
        match self.kt_pack {
            Some(_) => (4 * self.kv_batch.iter().product::<usize>() * self.d * self.lk)
                .next_multiple_of(64),
            None => 0,
        }
    }
    pub fn scratch_bytes(&self) -> usize {
        self.pack_bytes() + self.slot_bytes() * self.tasks()
    }
}

/// Pointers for one (batch, head).
#[derive(Clone, Copy)]
struct Head {
    q: Value,
    kt: Value,
    v: Value,
    mask: Option<Value>,
    out: Value,
}

#[allow(clippy::too_many_arguments)]
pub fn emit(
    k: &mut Kb,
    g: &AttnGeom,
    q: Value,
    kt: Value,
    v: Value,
    mask: Option<Value>,
    out: Value,
    scratch: Value,
) {
    let (kt, scratch) = match &g.kt_pack {
        Some((off, st)) => {
            let mut dims = g.kv_batch.clone();
            dims.extend([g.d, g.lk]);
            let st: Vec<i64> = st.iter().map(|&s| s as i64).collect();
            let src = k.offset(kt, 4 * *off as i64);
            let dense = super::movement::dense(&dims);
            super::movement::strided_copy(k, &dims, &st, src, &dense, scratch, 4);
            (scratch, k.offset(scratch, g.pack_bytes() as i64))
        }
        None => (kt, scratch),
    };
    let nqb = g.query_blocks();
    let mq = g.mq();
    let tail = g.lq - (nqb.max(1) - 1) * mq;
    let mut caps = vec![q, kt, v, out, scratch];
    caps.extend(mask);
    let slot_bytes = g.slot_bytes() as i64;
    let items = g.heads() * nqb;
    parallel::parallel_items(k, items, g.tasks(), &caps, &mut |k, p, it, slot| {
        let (b, qb) = if nqb == 1 {
            (it, k.iconst(0))
        } else {
            let b = k.b.ins().udiv_imm_u(it, nqb as i64);
            (b, k.b.ins_urem(it, nqb as i64))
        };
        let h = head_ptrs(
            k,
            g,
            b,
            Head {
                q: p[0],
                kt: p[1],
                v: p[2],
                mask: p.get(5).copied(),
                out: p[3],
            },
        );
        let sc = k.index(p[4], slot, slot_bytes);
        let i0 = k.b.ins().imul_imm_s(qb, mq as i64);
        parallel::last_or_rest(
            k,
            qb,
            nqb,
            &mut |k, last| query_block(k, g, h, sc, i0, if last { tail } else { mq }),
            tail != mq,
        );
    });
}

/// Pointers of flat head `b` (row-major over `q_batch`).
fn head_ptrs(k: &mut Kb, g: &AttnGeom, b: Value, h: Head) -> Head {
    let [q, kt, v, out] = [h.q, h.kt, h.v, h.out]
        .into_iter()
        .zip(&g.views)
        .map(|(p, (off, _))| k.offset(p, 4 * *off as i64))
        .collect::<Vec<_>>()
        .try_into()
        .expect("four views");
    let (mut q, mut kt, mut v, mut out, mut mask) = (q, kt, v, out, h.mask);
    let st = |i: usize, lv: usize| 4 * g.views[i].1[lv] as i64;
    for lv in 0..g.q_batch.len() {
        let inner_q: usize = g.q_batch[lv + 1..].iter().product();
        let (nq, nkv) = (g.q_batch[lv], g.kv_batch[lv]);
        let i = if inner_q == 1 {
            b
        } else {
            k.b.ins().udiv_imm_u(b, inner_q as i64)
        };
        let i = if lv == 0 {
            i
        } else {
            k.b.ins_urem(i, nq as i64)
        };
        // k/v index: same, broadcast, or grouped heads (i / group).
        let ki = if nkv == nq {
            Some(i)
        } else if nkv == 1 {
            None
        } else {
            Some(k.b.ins().udiv_imm_u(i, (nq / nkv) as i64))
        };
        if nq > 1 {
            q = k.index(q, i, st(0, lv));
            out = k.index(out, i, st(3, lv));
        }
        if let Some(ki) = ki {
            kt = k.index(kt, ki, st(1, lv));
            v = k.index(v, ki, st(2, lv));
        }
        if let (Some(m), Some(ms)) = (mask, &g.mask_strides) {
            mask = Some(k.index(m, i, 4 * ms[lv] as i64));
        }
    }
    Head {
        q,
        kt,
        v,
        mask,
        out,
    }
}

/// Query rows i0..i0+rows against all keys.
fn query_block(k: &mut Kb, g: &AttnGeom, h: Head, scratch: Value, i0: Value, rows: usize) {
    let bk = g.bk();
    let s_tile = scratch;
    let m_vec = k.offset(scratch, (4 * g.mq() * bk) as i64);
    let l_vec = k.offset(m_vec, (4 * g.mq()) as i64);
    let c_vec = k.offset(l_vec, (4 * g.mq()) as i64);
    let q = k.index(h.q, i0, 4 * g.row(0) as i64);
    let dst = k.index(h.out, i0, 4 * g.row(3) as i64);
    let o = if g.out_in_place() {
        dst
    } else {
        k.offset(c_vec, (4 * g.mq()) as i64)
    };
    super::movement::fill_f32(k, o, rows * g.dv, 0.0);
    super::movement::fill_f32(k, m_vec, rows, f32::NEG_INFINITY);
    super::movement::fill_f32(k, l_vec, rows, 0.0);
    let full = g.lk / bk * bk;
    let blk = |k: &mut Kb, j0: Value, n: usize, first: bool| {
        key_block(
            k,
            g,
            h,
            [s_tile, m_vec, l_vec, c_vec],
            [q, o, i0, j0],
            rows,
            n,
            first,
        )
    };
    // The first block (peeled: its softmax update has no correction), the
    // other whole blocks, the tail block.
    let j0 = k.iconst(0);
    blk(k, j0, bk.min(g.lk), true);
    k.for_range(bk as i64, full as i64, bk as i64, |k, j0| {
        blk(k, j0, bk, false)
    });
    if g.lk > full && full > 0 {
        let j0 = k.iconst(full as i64);
        blk(k, j0, g.lk - full, false);
    }
    // out = O / l
    k.for_range(0, rows as i64, 1, |k, r| {
        let l = k.load_at(F32, l_vec, r);
        let one = k.fconst(1.0);
        let inv = k.div(one, l);
        let invv = k.splat(inv);
        let orow = k.index(o, r, (4 * g.dv) as i64);
        let drow = k.index(dst, r, 4 * g.row(3) as i64);
        k.for_lanes(g.dv, |k, c, ty| {
            let x = k.load_at(ty, orow, c);
            let s = if ty == VF { invv } else { inv };
            let y = k.mul(x, s);
            k.store_at(y, drow, c);
        });
    });
}

/// Keys j0..j0+n for query rows i0..i0+rows (`at` = [q, o, i0, j0]);
/// `first`: the block at j0 = 0.
#[allow(clippy::too_many_arguments)]
fn key_block(
    k: &mut Kb,
    g: &AttnGeom,
    h: Head,
    sc: [Value; 4],
    at: [Value; 4],
    rows: usize,
    n: usize,
    first: bool,
) {
    let [q, o, i0, j0] = at;
    let [s_tile, m_vec, l_vec, c_vec] = sc;
    let bk = g.bk();
    let r = g.q_batch.len();
    // S = scale · Q[rows, D] · Kᵀ[D, j0..j0+n]
    let spec = GemmSpec {
        tile: None,
        m: rows,
        n,
        k: g.d,
        a: Strides {
            row: g.row(0),
            col: 1,
        },
        b_row: g.row(1),
        c_row: bk,
        alpha: g.scale,
        bias: None,
        relu: false,
    };
    let ktb = k.index(h.kt, j0, 4);
    gemm::emit_small(k, &spec, q, ktb, s_tile, None);
    // Per row: softcap and mask (f32x4 where the mask row is contiguous or
    // one value), then causal: the hidden keys of row i are the suffix
    // j > i + max(Lk − Lq, 0) (bottom-right aligned; top-left when Lq > Lk,
    // as the reference evaluator), overwritten with −inf.
    if g.softcap > 0.0 || h.mask.is_some() || g.causal {
        k.for_range(0, rows as i64, 1, |k, rr| {
            let srow = k.index(s_tile, rr, (4 * bk) as i64);
            let i = k.b.ins().iadd(i0, rr);
            let mrow = match (h.mask, &g.mask_strides) {
                (Some(m), Some(ms)) => {
                    let mr = k.index(m, i, 4 * ms[r] as i64);
                    Some((k.index(mr, j0, 4 * ms[r + 1] as i64), ms[r + 1]))
                }
                _ => None,
            };
            if g.softcap > 0.0 || mrow.is_some() {
                let vec_ok = mrow.is_none_or(|(_, st)| st <= 1);
                let elem = |k: &mut Kb, jj: Value, ty: Type| {
                    let mut s = k.load_at(ty, srow, jj);
                    if g.softcap > 0.0 {
                        let c = k.cst(ty, g.softcap);
                        let t = k.div(s, c);
                        let t = math::unary(k, UnaryOp::Tanh, t);
                        s = k.mul(t, c);
                    }
                    if let Some((mp, mstride)) = mrow {
                        let mv = if mstride == 0 {
                            let x = k.load(F32, mp, 0);
                            if ty == VF {
                                k.splat(x)
                            } else {
                                x
                            }
                        } else {
                            let p = k.index(mp, jj, 4 * mstride as i64);
                            k.load(ty, p, 0)
                        };
                        s = k.add(s, mv);
                    }
                    k.store_at(s, srow, jj);
                };
                if vec_ok {
                    k.for_lanes(n, elem);
                } else {
                    k.for_range(0, n as i64, 1, |k, jj| elem(k, jj, F32));
                }
            }
            if g.causal {
                // First hidden key of the block: clamp(i + off + 1 − j0, 0, n).
                let off = g.lk.saturating_sub(g.lq) as i64;
                let v = k.b.ins().iadd_imm_s(i, off + 1);
                let v = k.b.ins().isub(v, j0);
                let zero = k.iconst(0);
                let nn = k.iconst(n as i64);
                let v = k.b.ins().smax(v, zero);
                let v = k.b.ins().smin(v, nn);
                k.for_dyn(v, nn, 1, |k, jj| {
                    let ninf = k.fconst(f32::NEG_INFINITY);
                    k.store_at(ninf, srow, jj);
                });
            }
        });
    }
    // The online softmax update: assembled (zmm/ymm) where the target has
    // it, else the f32x4 code below with the same semantics.
    let kern = x86::softmax::SoftmaxKernel::Online {
        rows,
        n,
        ld: bk,
        dv: g.dv,
        first,
    };
    if let Some((fid, sig)) = k.asm().and_then(|be| be.softmax(&kern)) {
        let fref = x86::backend::import_function(k.b.func, fid, sig);
        k.b.ins().call(fref, &[s_tile, m_vec, l_vec, o]);
    } else {
        online_rows(k, g, [s_tile, m_vec, l_vec, c_vec], o, rows, n);
    }
    // O += P[rows, n] · V[j0..j0+n, Dv]
    let vb = k.index(h.v, j0, 4 * g.row(2) as i64);
    let spec = GemmSpec {
        tile: None,
        m: rows,
        n: g.dv,
        k: n,
        a: Strides { row: bk, col: 1 },
        b_row: g.row(2),
        c_row: g.dv,
        alpha: 1.0,
        bias: Some(Bias {
            strides: Strides { row: g.dv, col: 1 },
            beta: 1.0,
        }),
        relu: false,
    };
    gemm::emit_small(k, &spec, s_tile, vb, o, Some(o));
}

/// The online softmax update of one key block in f32x4 code (see
/// [`x86::softmax::SoftmaxKernel::Online`] for the semantics).
fn online_rows(k: &mut Kb, g: &AttnGeom, sc: [Value; 4], o: Value, rows: usize, n: usize) {
    let [s_tile, m_vec, l_vec, c_vec] = sc;
    let bk = g.bk();
    k.for_range(0, rows as i64, 1, |k, rr| {
        let srow = k.index(s_tile, rr, (4 * bk) as i64);
        // Row max of this block, new running max, correction factor.
        let ninf = k.fconst(f32::NEG_INFINITY);
        let nv = k.splat(ninf);
        let bmv = k.var(VF, nv);
        let bms = k.var(F32, ninf);
        k.for_lanes(n, |k, jj, ty| {
            let s = k.load_at(ty, srow, jj);
            let acc = if ty == VF { bmv } else { bms };
            let a = k.get(acc);
            let a = k.max(a, s);
            k.set(acc, a);
        });
        let bv = k.get(bmv);
        let bh = k.hreduce(bv, |k, a, b| k.max(a, b));
        let bs = k.get(bms);
        let bmax = k.max(bh, bs);
        let m_old = k.load_at(F32, m_vec, rr);
        let m_new = k.max(m_old, bmax);
        // All keys so far masked: use 0 as the reference so no inf − inf appears.
        let zero = k.fconst(0.0);
        let m_safe = k.select_cmp(FloatCC::Equal, m_new, ninf, zero, m_new);
        let d = k.sub(m_old, m_safe);
        let corr = math::unary(k, UnaryOp::Exp, d);
        k.store_at(m_new, m_vec, rr);
        k.store_at(corr, c_vec, rr);
        // P = exp(S − m), row sum into l.
        let msv = k.splat(m_safe);
        let zv = k.cst(VF, 0.0);
        let sv = k.var(VF, zv);
        let ss = k.var(F32, zero);
        k.for_lanes(n, |k, jj, ty| {
            let s = k.load_at(ty, srow, jj);
            let mm = if ty == VF { msv } else { m_safe };
            let t = k.sub(s, mm);
            let e = math::unary(k, UnaryOp::Exp, t);
            k.store_at(e, srow, jj);
            let acc = if ty == VF { sv } else { ss };
            let a = k.get(acc);
            let a = k.add(a, e);
            k.set(acc, a);
        });
        let svv = k.get(sv);
        let sh = k.hreduce(svv, |k, a, b| k.add(a, b));
        let sst = k.get(ss);
        let bsum = k.add(sh, sst);
        let l_old = k.load_at(F32, l_vec, rr);
        let l_new = k.fma(l_old, corr, bsum);
        k.store_at(l_new, l_vec, rr);
        // O[row] *= corr
        let orow = k.index(o, rr, (4 * g.dv) as i64);
        let cv = k.splat(corr);
        k.for_lanes(g.dv, |k, c, ty| {
            let x = k.load_at(ty, orow, c);
            let s = if ty == VF { cv } else { corr };
            let y = k.mul(x, s);
            k.store_at(y, orow, c);
        });
    });
}
