//! Winograd F(2×2, 3×3) convolution on the assembled GEMMs.
//!
//! A 3×3 stride-1 conv computes each 2×2 output tile from a 4×4 input
//! patch with 16 multiplies per (input, output) channel pair instead of 36:
//! `Y = Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A`. Summed over input channels, the
//! elementwise products become 16 independent GEMMs, one per transformed
//! position ξ: `M_ξ[co, tile] = Σ_ci U_ξ[co, ci]·V_ξ[ci, tile]`.
//!
//! - `U = G·g·Gᵀ` is computed at compile time into a data object (16
//!   `[M, C]` matrices, read in place as the GEMMs' A).
//! - Per chunk of `tile_rows` tile rows, the assembled input transform
//!   ([`x86::winograd`]) writes `V` straight in the GEMM's packed-B layout
//!   (columns padded to whole panels: a masked panel costs the GEMM as much
//!   as a full one), the 16 GEMMs write `M`, and the output transform adds
//!   the epilogue (bias, fused residual, relu, or a fused 2×2/2 max pool:
//!   a pool window is exactly one tile) while writing the output.
//!
//! `V` and `M` of one chunk stay in L2 (the optimizer sizes `tile_rows`);
//! chunks are independent items for the thread pool, each task with its
//! own scratch slot. AVX-512 only: the optimizer offers the algorithm only
//! for targets whose cost model says so ([`crate::opt::cost::Machine`]).

use super::conv::{self, ConvGeom};
use super::gemm::{self, GemmSpec, Strides};
use super::kb::{InsExt, Kb, PTR};
use super::parallel;
use super::x86::{self, winograd as xw};
use cranelift_codegen::ir::{InstBuilder, Value};

/// Whether the conv (with its fused pool, if any) has a Winograd form:
/// 2-D 3×3, stride 1, dilation 1, one group; a fused pool must be 2×2,
/// stride 2, unpadded, so each pool window is one output tile.
pub fn applicable(g: &ConvGeom) -> bool {
    let pool_ok = g.pool.as_ref().is_none_or(|p| {
        p.k == [2, 2]
            && p.stride == [2, 2]
            && p.dil == [1, 1]
            && p.pad_begin == [0, 0]
            && p.oh == g.oh / 2
            && p.ow == g.ow / 2
            && !g.accumulate
    });
    g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.dil == [1, 1]
        && g.group == 1
        && g.oh >= 1
        && g.ow >= 1
        && pool_ok
}

/// Tile rows and tiles per row: the whole output, or only the tiles the
/// fused pool reads (`pooled` = pooled height and width).
pub fn tile_grid(oh: usize, ow: usize, pooled: Option<(usize, usize)>) -> (usize, usize) {
    pooled.unwrap_or((oh.div_ceil(2), ow.div_ceil(2)))
}

/// Panel width of the GEMMs' packed B for `m` output and `c` input channels.
pub fn panel_cols(m: usize, c: usize) -> usize {
    let spec = x86::AsmGemm {
        m,
        n: 64,
        k: c,
        a_row: c,
        a_col: 1,
        b_row: 64,
        c_row: 64,
        alpha: 1.0,
        bias: None,
        relu: false,
        b_packed: true,
    };
    x86::tiling(&spec, x86::Level::Avx512).nv * x86::Level::Avx512.lanes()
}

/// GEMM columns of a chunk of `tiles` tiles: whole panels.
pub fn padded_cols(tiles: usize, m: usize, c: usize) -> usize {
    tiles.max(1).next_multiple_of(panel_cols(m, c))
}

/// Elements between the 16 planes of `V` (K = `c`) or of `M` (K = `m`)
/// for `np` columns: the plane plus 33 cache lines, so the 16 planes of a
/// channel fall in different L1 sets even when a plane is a multiple of
/// 4 KiB (same set for all 16: the input transform measured ~1.5× slower).
pub fn plane_stride(np: usize, rows: usize) -> usize {
    np * rows + 33 * 16
}

/// Scratch bytes of one chunk of `tiles` tiles (`V` then `M`).
pub fn slot_bytes(tiles: usize, m: usize, c: usize) -> usize {
    let np = padded_cols(tiles, m, c);
    4 * 16 * (plane_stride(np, c) + plane_stride(np, m))
}

/// The tile-row count actually used: a divisor of `th`, at most `want`.
pub fn sanitize_rows(th: usize, want: usize) -> usize {
    (1..=want.clamp(1, th.max(1)))
        .rev()
        .find(|r| th.max(1).is_multiple_of(*r))
        .unwrap_or(1)
}

/// One Winograd conv: geometry and chunking.
pub struct Wino<'g> {
    g: &'g ConvGeom,
    th: usize,
    tw: usize,
    tr: usize,
    nr: usize,
    np: usize,
}

impl<'g> Wino<'g> {
    pub fn new(g: &'g ConvGeom, tile_rows: usize) -> Self {
        let pooled = g.pool.as_ref().map(|p| (p.oh, p.ow));
        let (th, tw) = tile_grid(g.oh, g.ow, pooled);
        let tr = sanitize_rows(th, tile_rows);
        let nr = panel_cols(g.m, g.c);
        let np = padded_cols(tr * tw, g.m, g.c);
        Wino {
            g,
            th,
            tw,
            tr,
            nr,
            np,
        }
    }

    fn chunks(&self) -> usize {
        self.th.max(1) / self.tr
    }

    fn items(&self) -> usize {
        self.g.n * self.chunks()
    }

    fn slot_bytes(&self) -> usize {
        slot_bytes(self.tr * self.tw, self.g.m, self.g.c)
    }

    /// Parallel tasks over the (image, chunk) items; 1 when there are too
    /// few (each chunk's GEMMs then split over the threads themselves).
    pub fn tasks(&self) -> usize {
        let items = self.items();
        if items < 2 {
            return 1;
        }
        let macs = 16 * self.g.m * self.g.c * self.np * items;
        parallel::tasks_for(items, macs, 1 << 19, 1 << 18, parallel::MAX_SLOTS)
    }

    /// Tile rows per chunk when chunks run as parallel tasks: an odd item
    /// count splits unevenly over two threads (ResNet's layer 1: 7 chunks
    /// of 4 tile rows, 4 + 3), so tasks take the largest smaller divisor
    /// of the tile rows that makes the count even, unless its chunks waste
    /// more padded GEMM columns (14 chunks of 2 rows: 56 of 64 columns,
    /// as 112 of 128). Per element the result does not depend on the
    /// chunking.
    pub fn par_rows(&self) -> usize {
        let items = self.items();
        if items.is_multiple_of(2) || items >= 16 {
            return self.tr;
        }
        let waste = |tr: usize| {
            padded_cols(tr * self.tw, self.g.m, self.g.c) as f64 / (tr * self.tw) as f64
        };
        (1..self.tr)
            .rev()
            .find(|&r| {
                self.th.is_multiple_of(r)
                    && (self.g.n * self.th / r).is_multiple_of(2)
                    && waste(r) <= waste(self.tr) + 1e-9
            })
            .unwrap_or(self.tr)
    }

    /// Scratch for all slots (what the planner allocates): one serial
    /// chunk, or one per task of the parallel chunking.
    pub fn total_scratch_bytes(&self) -> usize {
        let par = Wino::new(self.g, self.par_rows());
        self.slot_bytes().max(par.slot_bytes() * par.tasks().max(1))
    }

    fn spec(&self) -> GemmSpec {
        let (m, c, np) = (self.g.m, self.g.c, self.np);
        GemmSpec {
            m,
            n: np,
            k: c,
            a: Strides { row: c, col: 1 },
            b_row: np,
            c_row: np,
            alpha: 1.0,
            bias: None,
            relu: false,
        }
    }

    /// The two transforms of chunk `ch` (chunks with equal specs share code).
    fn specs(&self, ch: usize, has_bias: bool, relu: bool) -> (xw::WinoIn, xw::WinoOut) {
        let g = self.g;
        let ty0 = ch * self.tr;
        let mut row_ok = Vec::with_capacity(4 * self.tr);
        for rr in 0..self.tr {
            for r in 0..4 {
                let ih = (2 * (ty0 + rr) + r) as i64 - g.pad[0] as i64;
                row_ok.push((0..g.h as i64).contains(&ih));
            }
        }
        let input = xw::WinoIn {
            w: g.w,
            plane: g.h * g.w,
            pad_w: g.pad[1],
            tw: self.tw,
            tr: self.tr,
            row_ok,
            channels: g.c,
            nr: self.nr,
            np: self.np,
            xi_stride: plane_stride(self.np, g.c),
        };
        let pool = g.pool.is_some();
        let (ow, plane) = match &g.pool {
            Some(p) => (p.ow, p.oh * p.ow),
            None => (g.ow, g.oh * g.ow),
        };
        let output = xw::WinoOut {
            channels: g.m,
            np: self.np,
            xi_stride: plane_stride(self.np, g.m),
            tw: self.tw,
            tr: self.tr,
            ow,
            plane,
            row2_ok: (0..self.tr)
                .map(|rr| pool || 2 * (ty0 + rr) + 1 < g.oh)
                .collect(),
            bias: has_bias,
            accumulate: g.accumulate,
            relu,
            pool,
        };
        (input, output)
    }
}

/// `U_ξ = (G·g·Gᵀ)[a][b]` (ξ = 4a + b) for every filter: 16 `[M, C]`
/// matrices. `w` is `[M, C, 3, 3]`.
pub fn transform_weights(w: &[f32], m: usize, c: usize) -> Vec<f32> {
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0f32; 16 * m * c];
    for co in 0..m {
        for ci in 0..c {
            let g = &w[(co * c + ci) * 9..][..9];
            // t = G·g (4×3), then t·Gᵀ (4×4)
            let mut t = [[0f64; 3]; 4];
            for (a, row) in t.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|i| G[a][i] * g[i * 3 + j] as f64).sum();
                }
            }
            for a in 0..4 {
                for b in 0..4 {
                    let v: f64 = (0..3).map(|j| t[a][j] * G[b][j]).sum();
                    u[((4 * a + b) * m + co) * c + ci] = v as f32;
                }
            }
        }
    }
    u
}

/// Emits the conv. `w` must be constant (`wc`); `y` holds the residual
/// already when `g.accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn emit(
    k: &mut Kb,
    g: &ConvGeom,
    tile_rows: usize,
    x: Value,
    wc: &gemm::ConstB,
    bias: Option<Value>,
    y: Value,
    scratch: Value,
    relu: bool,
) {
    let level = k.asm().map(|be| be.level());
    assert_eq!(
        level,
        Some(x86::Level::Avx512),
        "winograd conv chosen for a target without AVX-512 kernels"
    );
    let (m, c) = (g.m, g.c);
    let ukey = format!("wino U {} {m}x{c}", wc.key);
    let wdata = wc.data;
    let uid = k
        .asm()
        .and_then(|be| {
            be.data(&ukey, &mut || {
                transform_weights(wdata, m, c)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
        })
        .expect("winograd weights data object");
    let serial = Wino::new(g, tile_rows);
    let par = Wino::new(g, serial.par_rows());
    let mut caps = vec![x, y, scratch];
    caps.extend(bias);
    let mut one = Items::new(k, &serial, uid, bias.is_some(), relu);
    if par.tr == serial.tr {
        let tasks = serial.tasks();
        parallel::two_or(k, tasks, &mut |k, tasks| {
            parallel::parallel_items(k, serial.items(), tasks, &caps, &mut |k, p, it, slot| {
                one.emit(k, p, it, slot)
            })
        });
        return;
    }
    // Tasks take the finer chunking (see `par_rows`); no threads: the serial one.
    let mut many = Items::new(k, &par, uid, bias.is_some(), relu);
    let tasks = par.tasks();
    parallel::two_or(k, tasks, &mut |k, tasks| {
        parallel::parallel_items_or(
            k,
            par.items(),
            tasks,
            &caps,
            &mut |k, p, it, slot| many.emit(k, p, it, slot),
            Some(&mut |k: &mut Kb| {
                let zero = k.iconst(0);
                k.for_range(0, serial.items() as i64, 1, |k, it| {
                    one.emit(k, &caps, it, zero)
                });
            }),
        )
    });
}

/// The (image, chunk) items of one chunking, with its transform functions.
struct Items<'w> {
    w: &'w Wino<'w>,
    fin: Vec<(conv::AsmFn, Vec<usize>)>,
    fout: Vec<(conv::AsmFn, Vec<usize>)>,
    /// The transformed weights' data object.
    u: cranelift_module::DataId,
    has_bias: bool,
}

impl<'w> Items<'w> {
    fn new(
        k: &mut Kb,
        w: &'w Wino<'w>,
        u: cranelift_module::DataId,
        has_bias: bool,
        relu: bool,
    ) -> Self {
        // Chunks with equal transform specs share one pair of functions;
        // the largest group is the fallthrough of the dispatch.
        let mut groups: Vec<((xw::WinoIn, xw::WinoOut), Vec<usize>)> = Vec::new();
        for ch in 0..w.chunks() {
            let key = w.specs(ch, has_bias, relu);
            match groups.iter_mut().find(|e| e.0 == key) {
                Some(e) => e.1.push(ch),
                None => groups.push((key, vec![ch])),
            }
        }
        groups.sort_by_key(|e| std::cmp::Reverse(e.1.len()));
        let mut fin = Vec::new();
        let mut fout = Vec::new();
        for ((si, so), chunks) in &groups {
            let be = k.asm().expect("checked: AVX-512 backend");
            let f = be
                .func(&format!("wino-in {si:?}"), &mut |_| xw::assemble_in(si))
                .expect("winograd input transform assembles");
            fin.push((f, chunks.clone()));
            let f = be
                .func(&format!("wino-out {so:?}"), &mut |_| xw::assemble_out(so))
                .expect("winograd output transform assembles");
            fout.push((f, chunks.clone()));
        }
        Items {
            w,
            fin,
            fout,
            u,
            has_bias,
        }
    }

    /// Item `it` (image · chunks + chunk); `p` = [x, y, scratch, bias?];
    /// its scratch is slot `slot`.
    fn emit(&mut self, k: &mut Kb, p: &[Value], it: Value, slot: Value) {
        let (w, g) = (self.w, self.w.g);
        let (m, c) = (g.m, g.c);
        let (x, y, s) = (p[0], p[1], p[2]);
        let bias = self.has_bias.then(|| p[3]);
        let chunks = w.chunks();
        let (img, ch) = if chunks == 1 {
            (it, k.iconst(0))
        } else {
            let img = k.b.ins().udiv_imm_u(it, chunks as i64);
            (img, k.b.ins_urem(it, chunks as i64))
        };
        let (row_out, plane_out) = match &g.pool {
            Some(p) => (p.ow, p.oh * p.ow),
            None => (2 * g.ow, g.oh * g.ow),
        };
        let x = k.index(x, img, (4 * c * g.h * g.w) as i64);
        // x at input row 2·ty0 − pad (rows outside the image are never read)
        let x = k.index(x, ch, (8 * w.tr * g.w) as i64);
        let x = k.offset(x, -4 * (g.pad[0] * g.w) as i64);
        let y = k.index(y, img, (4 * m * plane_out) as i64);
        let y = k.index(y, ch, (4 * w.tr * row_out) as i64);
        let (v_stride, m_stride) = (plane_stride(w.np, c), plane_stride(w.np, m));
        let v = k.index(s, slot, w.slot_bytes() as i64);
        let mm = k.offset(v, (4 * 16 * v_stride) as i64);
        let zero = k.iconst(0);
        conv::dispatch(k, &self.fin, ch, &[x, v, zero, zero]);
        let gv = x86::backend::import_data(k.b.func, self.u);
        let u = k.b.ins().symbol_value(PTR, gv);
        let spec = w.spec();
        for xi in 0..16 {
            let a = k.offset(u, (4 * xi * m * c) as i64);
            let b = k.offset(v, (4 * xi * v_stride) as i64);
            let cc = k.offset(mm, (4 * xi * m_stride) as i64);
            gemm::emit_packed_b(k, &spec, a, b, cc, None);
        }
        let bias = bias.unwrap_or(zero);
        conv::dispatch(k, &self.fout, ch, &[mm, y, bias, zero]);
    }
}
