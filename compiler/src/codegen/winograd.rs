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
//! own scratch slot. Targets without the AVX-512 kernels take the
//! portable path ([`portable`]: Cranelift f32x4 transforms around ordinary
//! GEMMs); the optimizer offers the algorithm where the target's cost
//! model says so ([`crate::opt::cost::Machine`]).

use super::conv::{self, ConvGeom};
use super::gemm::{self, GemmSpec, Strides};
use super::kb::{InsExt, Kb, PTR, VF};
use super::parallel;
use super::x86::{self, winograd as xw};
use cranelift_codegen::ir::types::F32;
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
    let spec = x86::AsmGemm::dense(m, 64, c, true);
    x86::tiling(&spec, x86::Level::Avx512).nv * x86::Level::Avx512.lanes()
}

/// Columns of a chunk's `V` on the AVX-512 path: whole panels, or one
/// panel of whole vectors when multiplied transposed (`V` is then A).
pub fn padded_cols(tiles: usize, m: usize, c: usize) -> usize {
    if transposed(tiles, m, c) {
        tiles.max(1).next_multiple_of(16)
    } else {
        padded_cols_plain(tiles, m, c)
    }
}

/// Elements between the 16 planes of `V` (K = `c`) or of `M` (K = `m`)
/// for `np` columns: the plane plus 33 cache lines, so the 16 planes of a
/// channel fall in different L1 sets even when a plane is a multiple of
/// 4 KiB (same set for all 16: the input transform measured ~1.5× slower).
pub fn plane_stride(np: usize, rows: usize) -> usize {
    np * rows + 33 * 16
}

/// Whether a chunk of `tiles` tiles multiplies transposed on the AVX-512
/// path: `Mᵀ_ξ = Vᵀ_ξ·Uᵀ_ξ` with the tiles as rows (no padded columns) and
/// `Uᵀ_ξ` pre-packed at compile time (streamed contiguously instead of
/// broadcast row by row), then transposed for the output transform. For
/// narrow chunks whose columns would leave much of a panel idle (ResNet's
/// layer 3: 49 tiles in 64 columns: its products −30%) and enough filters
/// for whole panels. At least 32 tiles: each element of `Uᵀ_ξ` then feeds
/// 64+ flops, so the product keeps up with streaming U from memory (16
/// tiles, ResNet's layer 4: U is 16.8 MB per conv and the products ran at
/// memory speed, 2.4 ms per conv against 1.3 ms for im2col).
/// `NNC_NO_WINO_T` turns it off (to measure against the plain product).
pub fn transposed(tiles: usize, m: usize, c: usize) -> bool {
    let np = padded_cols_plain(tiles, m, c);
    (32..64).contains(&tiles)
        && m >= 32
        && np as f64 > 1.15 * tiles as f64
        // (an assembled kernel with pre-packed B exists from this size)
        && tiles * m * c >= 48 * 1024
        && std::env::var_os("NNC_NO_WINO_T").is_none()
}

fn padded_cols_plain(tiles: usize, m: usize, c: usize) -> usize {
    tiles.max(1).next_multiple_of(panel_cols(m, c))
}

/// GEMM work columns of a chunk of `tiles` tiles on the AVX-512 path (the
/// cost model's N): the tiles when multiplied transposed, else whole panels.
pub fn gemm_cols(tiles: usize, m: usize, c: usize) -> usize {
    if transposed(tiles, m, c) {
        tiles.max(1)
    } else {
        padded_cols(tiles, m, c)
    }
}

/// Scratch bytes of one chunk of `tiles` tiles on the AVX-512 path (`V`,
/// `M`, and `Mᵀ` when transposed).
pub fn slot_bytes(tiles: usize, m: usize, c: usize) -> usize {
    let np = padded_cols(tiles, m, c);
    if transposed(tiles, m, c) {
        let t = tiles.max(1);
        4 * 16 * (plane_stride(np, c) + 2 * plane_stride(t, m))
    } else {
        4 * 16 * (plane_stride(np, c) + plane_stride(np, m))
    }
}

/// GEMM columns of a portable-path chunk of `tr` tile rows of `tw` tiles:
/// each tile row padded to whole f32x4 groups (the transforms work on 4
/// tiles of a row at a time; padding columns hold finite values).
pub fn portable_cols(tr: usize, tw: usize) -> usize {
    tr.max(1) * tw.max(1).next_multiple_of(4)
}

/// Floats per row of the portable input transform's zero-padded copy of
/// the input rows (tile `tx` reads copy columns `2tx..2tx+4`; the last
/// group's loads reach `2·twp + 2`).
fn copy_width(tw: usize) -> usize {
    2 * tw.max(1).next_multiple_of(4) + 4
}

/// Scratch bytes of one portable-path chunk (`V`, `M`, then the
/// zero-padded copy of one channel's `2·tr + 2` input rows).
pub fn portable_slot_bytes(tr: usize, tw: usize, m: usize, c: usize) -> usize {
    let np = portable_cols(tr, tw);
    4 * (16 * (plane_stride(np, c) + plane_stride(np, m)) + (2 * tr + 2) * copy_width(tw))
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
    /// The portable path (Cranelift transforms, row-major `V`/`M`, ordinary
    /// GEMMs) rather than the AVX-512 one.
    portable: bool,
    th: usize,
    tw: usize,
    tr: usize,
    nr: usize,
    np: usize,
    /// Multiplied transposed (see [`transposed`]; AVX-512 path only).
    transposed: bool,
}

impl<'g> Wino<'g> {
    /// The AVX-512 path's geometry.
    pub fn new(g: &'g ConvGeom, tile_rows: usize) -> Self {
        Wino::on_path(g, tile_rows, false)
    }

    /// The geometry of the AVX-512 (`portable` false) or the portable path.
    pub fn on_path(g: &'g ConvGeom, tile_rows: usize, portable: bool) -> Self {
        let pooled = g.pool.as_ref().map(|p| (p.oh, p.ow));
        let (th, tw) = tile_grid(g.oh, g.ow, pooled);
        let tr = sanitize_rows(th, tile_rows);
        let transposed = !portable && transposed(tr * tw, g.m, g.c);
        let np = if portable {
            portable_cols(tr, tw)
        } else {
            padded_cols(tr * tw, g.m, g.c)
        };
        // Transposed: `V` is one panel (A of the product, read in place).
        let nr = if portable {
            4
        } else if transposed {
            np
        } else {
            panel_cols(g.m, g.c)
        };
        Wino {
            g,
            portable,
            th,
            tw,
            tr,
            nr,
            np,
            transposed,
        }
    }

    fn chunks(&self) -> usize {
        self.th.max(1) / self.tr
    }

    fn items(&self) -> usize {
        self.g.n * self.chunks()
    }

    fn slot_bytes(&self) -> usize {
        if self.portable {
            portable_slot_bytes(self.tr, self.tw, self.g.m, self.g.c)
        } else {
            slot_bytes(self.tr * self.tw, self.g.m, self.g.c)
        }
    }

    /// GEMM columns of a chunk of `tr` tile rows on this path.
    fn cols(&self, tr: usize) -> usize {
        if self.portable {
            portable_cols(tr, self.tw)
        } else {
            padded_cols(tr * self.tw, self.g.m, self.g.c)
        }
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
        let waste = |tr: usize| self.cols(tr) as f64 / (tr * self.tw) as f64;
        (1..self.tr)
            .rev()
            .find(|&r| {
                self.th.is_multiple_of(r)
                    && (self.g.n * self.th / r).is_multiple_of(2)
                    && waste(r) <= waste(self.tr) + 1e-9
            })
            .unwrap_or(self.tr)
    }

    /// Scratch for all slots on this path: one serial chunk, or one per
    /// task of the parallel chunking.
    fn path_scratch_bytes(&self) -> usize {
        let par = Wino::on_path(self.g, self.par_rows(), self.portable);
        self.slot_bytes().max(par.slot_bytes() * par.tasks().max(1))
    }

    /// Scratch for all slots (what the planner allocates): enough for
    /// either path, as the planner does not know the target's kernels.
    pub fn total_scratch_bytes(&self) -> usize {
        let other = Wino::on_path(self.g, self.tr, !self.portable);
        self.path_scratch_bytes().max(other.path_scratch_bytes())
    }

    /// Item `it` (image · chunks + chunk) of the conv from `x` to `y`: its
    /// chunk index, its image's input, and its chunk's first output row.
    fn item(&self, k: &mut Kb, it: Value, x: Value, y: Value) -> (Value, Value, Value) {
        let g = self.g;
        let chunks = self.chunks();
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
        let x = k.index(x, img, (4 * g.c * g.h * g.w) as i64);
        let y = k.index(y, img, (4 * g.m * plane_out) as i64);
        let y = k.index(y, ch, (4 * self.tr * row_out) as i64);
        (ch, x, y)
    }

    /// Columns of a chunk's `M` (the output transform's input).
    fn m_cols(&self) -> usize {
        if self.transposed {
            self.tr * self.tw
        } else {
            self.np
        }
    }

    /// The transposed product `Mᵀ_ξ [tiles, M] = Vᵀ_ξ·Uᵀ_ξ`: A is `V_ξ`
    /// read in place (one panel: element (tile, ci) at ci·np + tile).
    fn spec_t(&self) -> GemmSpec {
        let (m, c, t) = (self.g.m, self.g.c, self.tr * self.tw);
        GemmSpec {
            tile: None,
            m: t,
            n: m,
            k: c,
            a: Strides {
                row: 1,
                col: self.np,
            },
            b_row: m,
            c_row: m,
            alpha: 1.0,
            bias: None,
            relu: false,
        }
    }

    fn spec(&self) -> GemmSpec {
        let (m, c, np) = (self.g.m, self.g.c, self.np);
        GemmSpec {
            tile: None,
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
        let mcols = self.m_cols();
        let output = xw::WinoOut {
            channels: g.m,
            np: mcols,
            xi_stride: plane_stride(mcols, g.m),
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
    if level != Some(x86::Level::Avx512) {
        return portable::emit(k, g, tile_rows, x, wc, bias, y, scratch, relu);
    }
    let (m, c) = (g.m, g.c);
    let serial = Wino::new(g, tile_rows);
    let par = Wino::new(g, serial.par_rows());
    // The plain product reads U from one data object; the transposed one
    // has each Uᵀ_ξ pre-packed as the B of its GEMM.
    let uid = (!serial.transposed || !par.transposed).then(|| weights_data(k, wc, m, c));
    let uvals = (serial.transposed || par.transposed).then(|| transform_weights(wc.data, m, c));
    let wu = Weights {
        plain: uid,
        transposed: uvals.as_deref().map(|u| (u, wc.key.as_str())),
    };
    let mut caps = vec![x, y, scratch];
    caps.extend(bias);
    let mut one = Items::new(k, &serial, wu, bias.is_some(), relu);
    let one = &mut |k: &mut Kb, p: &[Value], it: Value, slot: Value| one.emit(k, p, it, slot);
    if par.tr == serial.tr {
        return schedule(k, &serial, one, None, &caps);
    }
    let mut many = Items::new(k, &par, wu, bias.is_some(), relu);
    let many = &mut |k: &mut Kb, p: &[Value], it: Value, slot: Value| many.emit(k, p, it, slot);
    schedule(k, &serial, one, Some((&par, many)), &caps);
}

/// Runs the (image, chunk) items of chunking `sw` (emitted by `one`) as
/// parallel items, or, when given, those of `par` (a finer chunking, see
/// [`Wino::par_rows`]) as the tasks, with `sw`'s as the single-threaded code.
fn schedule(
    k: &mut Kb,
    sw: &Wino,
    one: &mut parallel::Body,
    par: Option<(&Wino, &mut parallel::Body)>,
    caps: &[Value],
) {
    let Some((pw, many)) = par else {
        let tasks = sw.tasks();
        parallel::two_or(k, tasks, &mut |k, tasks| {
            parallel::parallel_items(k, sw.items(), tasks, caps, one)
        });
        return;
    };
    let tasks = pw.tasks();
    parallel::two_or(k, tasks, &mut |k, tasks| {
        parallel::parallel_items_or(
            k,
            pw.items(),
            tasks,
            caps,
            many,
            Some(&mut |k: &mut Kb| {
                let zero = k.iconst(0);
                k.for_range(0, sw.items() as i64, 1, |k, it| one(k, caps, it, zero));
            }),
        )
    });
}

/// The data object of the transformed weights (any target).
fn weights_data(k: &mut Kb, wc: &gemm::ConstB, m: usize, c: usize) -> cranelift_module::DataId {
    let ukey = format!("wino U {} {m}x{c}", wc.key);
    let wdata = wc.data;
    k.env
        .as_deref_mut()
        .and_then(|e| {
            e.data(&ukey, &mut || {
                transform_weights(wdata, m, c)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
        })
        .expect("winograd weights data object")
}

/// The transformed weights as the chunkings need them.
#[derive(Clone, Copy)]
struct Weights<'u> {
    /// U's data object (A of the plain products).
    plain: Option<cranelift_module::DataId>,
    /// U's values and the weight's key (each Uᵀ_ξ pre-packed as a B).
    transposed: Option<(&'u [f32], &'u str)>,
}

/// The (image, chunk) items of one chunking, with its transform functions.
struct Items<'w> {
    w: &'w Wino<'w>,
    fin: Vec<(conv::AsmFn, Vec<usize>)>,
    fout: Vec<(conv::AsmFn, Vec<usize>)>,
    u: Weights<'w>,
    has_bias: bool,
}

impl<'w> Items<'w> {
    fn new(k: &mut Kb, w: &'w Wino<'w>, u: Weights<'w>, has_bias: bool, relu: bool) -> Self {
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
        let s = p[2];
        let bias = self.has_bias.then(|| p[3]);
        let (ch, x, y) = w.item(k, it, p[0], p[1]);
        // x at input row 2·ty0 − pad (rows outside the image are never read)
        let x = k.index(x, ch, (8 * w.tr * g.w) as i64);
        let x = k.offset(x, -4 * (g.pad[0] * g.w) as i64);
        let (v_stride, m_stride) = (plane_stride(w.np, c), plane_stride(w.m_cols(), m));
        let v = k.index(s, slot, w.slot_bytes() as i64);
        let mm = k.offset(v, (4 * 16 * v_stride) as i64);
        let zero = k.iconst(0);
        conv::dispatch(k, &self.fin, ch, &[x, v, zero, zero]);
        if w.transposed {
            // Per ξ: Mᵀ_ξ (after M) = Vᵀ_ξ·Uᵀ_ξ, transposed into M_ξ. The 16
            // are tasks when the chunk is not one already (a single-chunk
            // conv: each thread streams its own Uᵀ_ξ whole).
            let (uvals, key) = self.u.transposed.expect("transposed weights");
            let mt = k.offset(mm, (4 * 16 * m_stride) as i64);
            let spec = w.spec_t();
            let bs: Vec<gemm::ConstB> = (0..16)
                .map(|xi| gemm::ConstB {
                    key: format!("{key} wino-uT {m}x{c}"),
                    data: &uvals[xi * m * c..(xi + 1) * m * c],
                    transposed: true,
                })
                .collect();
            let (ut, len) = gemm::packed_const_bs(k, &spec, &bs).expect("packed Uᵀ");
            let t = w.tr * w.tw;
            let tasks = if w.tasks() > 1 { 1 } else { 2 };
            parallel::parallel_items(k, 16, tasks, &[v, mt, mm, ut], &mut |k, p, xi, _| {
                let a = k.index(p[0], xi, (4 * v_stride) as i64);
                let src = k.index(p[1], xi, (4 * m_stride) as i64);
                let dst = k.index(p[2], xi, (4 * m_stride) as i64);
                let b = k.index(p[3], xi, (4 * len) as i64);
                gemm::emit_packed_b(k, &spec, a, b, src, None);
                transpose_product(k, src, dst, t, m);
            });
        } else {
            let gv = x86::backend::import_data(k.b.func, self.u.plain.expect("U data"));
            let u = k.b.ins().symbol_value(PTR, gv);
            let spec = w.spec();
            for xi in 0..16 {
                let a = k.offset(u, (4 * xi * m * c) as i64);
                let b = k.offset(v, (4 * xi * v_stride) as i64);
                let cc = k.offset(mm, (4 * xi * m_stride) as i64);
                gemm::emit_packed_b(k, &spec, a, b, cc, None);
            }
        }
        let bias = bias.unwrap_or(zero);
        conv::dispatch(k, &self.fout, ch, &[mm, y, bias, zero]);
    }
}

/// `M[co, j] = Mᵀ[j, co]` for one product of `t` tiles and `m` filters
/// (a row of 4 filters is one vector load and four lane stores).
fn transpose_product(k: &mut Kb, mt: Value, mm: Value, t: usize, m: usize) {
    let m4 = m / 4 * 4;
    k.for_range(0, t as i64, 1, |k, j| {
        let row = k.index(mt, j, (4 * m) as i64);
        let col = k.index(mm, j, 4);
        k.for_range(0, m4 as i64, 4, |k, co| {
            let x = k.load_at(VF, row, co);
            let d = k.index(col, co, (4 * t) as i64);
            for i in 0..4 {
                let e = k.b.ins().extractlane(x, i as u8);
                k.store(e, d, (4 * i * t) as i64);
            }
        });
        for co in m4..m {
            let e = k.load(F32, row, (4 * co) as i64);
            k.store(e, col, (4 * co * t) as i64);
        }
    });
}

/// The portable path (every target without the AVX-512 kernels): f32x4
/// Cranelift transforms around 16 ordinary GEMMs ([`gemm::emit`]: the
/// assembled AVX2 kernel where there is one, else Cranelift code).
///
/// Per chunk, `V_ξ` is row-major `[C, np]` and `M_ξ` `[M, np]` (planes
/// [`plane_stride`] apart), column `rr·twp + tx` for tile `tx` of the
/// chunk's tile row `rr`, rows padded to `twp` = whole groups of 4 tiles.
/// The input transform copies one channel's `2·tr + 2` input rows into a
/// zero-padded buffer (padding rows and columns, the last group's extra
/// tiles: all zeros, so padding columns of `V` are finite), then turns 4
/// tiles at a time into 16 vectors: lane `l` of the group at `tx0` needs
/// copy columns `2(tx0 + l) + c`, the even/odd lanes of two loads.
mod portable {
    use super::*;
    use crate::codegen::kb::VF;
    use cranelift_codegen::ir::condcodes::IntCC;
    use cranelift_codegen::ir::types::F32;
    use cranelift_module::DataId;

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit(
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
        let u = weights_data(k, wc, g.m, g.c);
        let serial = Wino::on_path(g, tile_rows, true);
        let par = Wino::on_path(g, serial.par_rows(), true);
        let mut caps = vec![x, y, scratch];
        caps.extend(bias);
        let has_bias = bias.is_some();
        let one = Chunk {
            w: &serial,
            u,
            has_bias,
            relu,
        };
        let one = &mut |k: &mut Kb, p: &[Value], it: Value, slot: Value| one.emit(k, p, it, slot);
        if par.tr == serial.tr {
            return schedule(k, &serial, one, None, &caps);
        }
        let many = Chunk {
            w: &par,
            u,
            has_bias,
            relu,
        };
        let many = &mut |k: &mut Kb, p: &[Value], it: Value, slot: Value| many.emit(k, p, it, slot);
        schedule(k, &serial, one, Some((&par, many)), &caps);
    }

    /// The items of one chunking.
    struct Chunk<'w> {
        w: &'w Wino<'w>,
        u: DataId,
        has_bias: bool,
        relu: bool,
    }

    /// Stores zeros over floats `from..to` of `p`.
    fn zero_fill(k: &mut Kb, p: Value, from: usize, to: usize) {
        if to <= from {
            return;
        }
        let n = to - from;
        let q = k.offset(p, 4 * from as i64);
        let z = k.cst(VF, 0.0);
        let n4 = n / 4 * 4;
        k.for_range(0, n4 as i64, 4, |k, i| k.store_at(z, q, i));
        let zs = k.fconst(0.0);
        for i in n4..n {
            k.store(zs, q, 4 * i as i64);
        }
    }

    /// `[v0 − v2, v1 + v2, v2 − v1, v1 − v3]` (Bᵀ applied along one axis).
    fn bt(k: &mut Kb, v: [Value; 4]) -> [Value; 4] {
        [
            k.sub(v[0], v[2]),
            k.add(v[1], v[2]),
            k.sub(v[2], v[1]),
            k.sub(v[1], v[3]),
        ]
    }

    /// `[v0 + v1 + v2, v1 − v2 − v3]` (Aᵀ applied along one axis).
    fn at(k: &mut Kb, v: [Value; 4]) -> [Value; 2] {
        let s = k.add(v[0], v[1]);
        let a = k.add(s, v[2]);
        let d = k.sub(v[1], v[2]);
        let b = k.sub(d, v[3]);
        [a, b]
    }

    impl Chunk<'_> {
        /// Item `it` (image · chunks + chunk); `p` = [x, y, scratch, bias?].
        fn emit(&self, k: &mut Kb, p: &[Value], it: Value, slot: Value) {
            let (w, g) = (self.w, self.w.g);
            let (m, c) = (g.m, g.c);
            let s = p[2];
            let bias = self.has_bias.then(|| p[3]);
            let (ch, x, y) = w.item(k, it, p[0], p[1]);
            let (vs, ms) = (plane_stride(w.np, c), plane_stride(w.np, m));
            let v = k.index(s, slot, w.slot_bytes() as i64);
            let mm = k.offset(v, (4 * 16 * vs) as i64);
            let buf = k.offset(mm, (4 * 16 * ms) as i64);
            let ty0 = k.b.ins().imul_imm_s(ch, w.tr as i64);
            self.input(k, x, ty0, v, buf);
            let gv = x86::backend::import_data(k.b.func, self.u);
            let u = k.b.ins().symbol_value(PTR, gv);
            let spec = w.spec();
            k.for_range(0, 16, 1, |k, xi| {
                let a = k.index(u, xi, (4 * m * c) as i64);
                let b = k.index(v, xi, (4 * vs) as i64);
                let cc = k.index(mm, xi, (4 * ms) as i64);
                gemm::emit(k, &spec, a, b, cc, None);
            });
            self.output(k, mm, y, ty0, bias);
        }

        /// `V` of the chunk whose first tile row is `ty0`; `x` is the image.
        fn input(&self, k: &mut Kb, x: Value, ty0: Value, v: Value, buf: Value) {
            let (w, g) = (self.w, self.w.g);
            let twp = w.tw.next_multiple_of(4);
            let cw = copy_width(w.tw);
            let (pad_h, pad_w) = (g.pad[0], g.pad[1]);
            let ih0 = k.b_ins_imul_add(ty0, 2, -(pad_h as i64));
            let vs = plane_stride(w.np, g.c);
            k.for_range(0, g.c as i64, 1, |k, ci| {
                let xc = k.index(x, ci, (4 * g.h * g.w) as i64);
                // The channel's input rows 2·ty0 − pad_h + j, zero-padded.
                k.for_range(0, (2 * w.tr + 2) as i64, 1, |k, j| {
                    let ih = k.b.ins().iadd(ih0, j);
                    let ok =
                        k.b.ins()
                            .icmp_imm_s(IntCC::UnsignedLessThan, ih, g.h as i64);
                    let dst = k.index(buf, j, (4 * cw) as i64);
                    k.if_else(
                        ok,
                        |k| {
                            let src = k.index(xc, ih, (4 * g.w) as i64);
                            zero_fill(k, dst, 0, pad_w);
                            let d = k.offset(dst, (4 * pad_w) as i64);
                            k.for_lanes(g.w, |k, i, ty| {
                                let e = k.load_at(ty, src, i);
                                k.store_at(e, d, i);
                            });
                            zero_fill(k, dst, pad_w + g.w, cw);
                        },
                        |k| zero_fill(k, dst, 0, cw),
                    );
                });
                let vc = k.index(v, ci, (4 * w.np) as i64);
                k.for_range(0, w.tr as i64, 1, |k, rr| {
                    let row = k.index(buf, rr, (8 * cw) as i64);
                    let vrow = k.index(vc, rr, (4 * twp) as i64);
                    k.for_range(0, twp as i64, 4, |k, tx0| {
                        let base = k.index(row, tx0, 8);
                        // d[r][c]: lane l = patch element (r, c) of tile tx0 + l.
                        let mut d = [[base; 4]; 4];
                        for (r, dr) in d.iter_mut().enumerate() {
                            let o = (4 * r * cw) as i64;
                            let a = k.load(VF, base, o);
                            let b = k.load(VF, base, o + 16);
                            let a2 = k.load(VF, base, o + 8);
                            let b2 = k.load(VF, base, o + 24);
                            dr[0] = k.shuffle4(a, b, [0, 2, 4, 6]);
                            dr[1] = k.shuffle4(a, b, [1, 3, 5, 7]);
                            dr[2] = k.shuffle4(a2, b2, [0, 2, 4, 6]);
                            dr[3] = k.shuffle4(a2, b2, [1, 3, 5, 7]);
                        }
                        // T = Bᵀ·d (over rows), then V = T·B (over columns).
                        let mut t = [[base; 4]; 4];
                        for cc in 0..4 {
                            let col = bt(k, [d[0][cc], d[1][cc], d[2][cc], d[3][cc]]);
                            for a in 0..4 {
                                t[a][cc] = col[a];
                            }
                        }
                        let dst = k.index(vrow, tx0, 4);
                        for (a, ta) in t.iter().enumerate() {
                            let va = bt(k, *ta);
                            for (b, &e) in va.iter().enumerate() {
                                k.store(e, dst, (4 * (4 * a + b) * vs) as i64);
                            }
                        }
                    });
                });
            });
        }

        /// Writes the chunk's outputs from `M` (`y` at its first row).
        fn output(&self, k: &mut Kb, mm: Value, y: Value, ty0: Value, bias: Option<Value>) {
            let (w, g) = (self.w, self.w.g);
            let twp = w.tw.next_multiple_of(4);
            let (row_out, plane) = match &g.pool {
                Some(p) => (p.ow, p.oh * p.ow),
                None => (2 * g.ow, g.oh * g.ow),
            };
            let pool = g.pool.is_some();
            k.for_range(0, g.m as i64, 1, |k, co| {
                let bv = bias.map(|b| k.load_at(F32, b, co));
                let yc = k.index(y, co, (4 * plane) as i64);
                let mc = k.index(mm, co, (4 * w.np) as i64);
                k.for_range(0, w.tr as i64, 1, |k, rr| {
                    let mrow = k.index(mc, rr, (4 * twp) as i64);
                    let yrow = k.index(yc, rr, (4 * row_out) as i64);
                    if pool || g.oh % 2 == 0 {
                        self.row(k, mrow, yrow, bv, true);
                    } else {
                        // Odd height: the image's last tile row has one output row.
                        let ty = k.b.ins().iadd(ty0, rr);
                        let ok =
                            k.b.ins()
                                .icmp_imm_s(IntCC::UnsignedLessThan, ty, (g.oh / 2) as i64);
                        k.if_else(
                            ok,
                            |k| self.row(k, mrow, yrow, bv, true),
                            |k| self.row(k, mrow, yrow, bv, false),
                        );
                    }
                });
            });
        }

        /// One tile row: whole groups of 4 complete tiles, then the rest.
        fn row(&self, k: &mut Kb, mrow: Value, yrow: Value, bv: Option<Value>, row2: bool) {
            let (w, g) = (self.w, self.w.g);
            let complete = if g.pool.is_some() { w.tw } else { g.ow / 2 };
            let nfull = complete / 4 * 4;
            k.for_range(0, nfull as i64, 4, |k, tx0| {
                self.group(k, mrow, yrow, tx0, None, row2, bv)
            });
            if nfull < w.tw {
                let count = match &g.pool {
                    Some(_) => w.tw - nfull,
                    None => g.ow - 2 * nfull,
                };
                let tx0 = k.iconst(nfull as i64);
                self.group(k, mrow, yrow, tx0, Some(count), row2, bv);
            }
        }

        /// Tiles `tx0..tx0 + 4` of a tile row; `count` outputs (columns, or
        /// pooled values) when the group is the row's partial last one.
        #[allow(clippy::too_many_arguments)]
        fn group(
            &self,
            k: &mut Kb,
            mrow: Value,
            yrow: Value,
            tx0: Value,
            count: Option<usize>,
            row2: bool,
            bv: Option<Value>,
        ) {
            let (w, g) = (self.w, self.w.g);
            let ms = plane_stride(w.np, g.m);
            let mp = k.index(mrow, tx0, 4);
            let mv: Vec<Value> = (0..16)
                .map(|xi| k.load(VF, mp, (4 * xi * ms) as i64))
                .collect();
            // S = Aᵀ·M (over rows), then Y = S·A (over columns).
            let mut s = [[mp; 4]; 2];
            for b in 0..4 {
                let col = at(k, [mv[b], mv[4 + b], mv[8 + b], mv[12 + b]]);
                s[0][b] = col[0];
                s[1][b] = col[1];
            }
            let yv = [at(k, s[0]), at(k, s[1])];
            if g.pool.is_some() {
                let a = k.max(yv[0][0], yv[0][1]);
                let b = k.max(yv[1][0], yv[1][1]);
                let mx = k.max(a, b);
                let yp = k.index(yrow, tx0, 4);
                self.store(k, &[mx], yp, count, bv);
                return;
            }
            for (i, yi) in yv.iter().enumerate().take(if row2 { 2 } else { 1 }) {
                let lo = k.shuffle4(yi[0], yi[1], [0, 4, 1, 5]);
                let hi = k.shuffle4(yi[0], yi[1], [2, 6, 3, 7]);
                let yp = k.index(yrow, tx0, 8);
                let yp = k.offset(yp, (4 * i * g.ow) as i64);
                self.store(k, &[lo, hi], yp, count, bv);
            }
        }

        /// Stores the vectors `vs` (consecutive) at `p` with the epilogue;
        /// only the first `count` floats when given.
        fn store(
            &self,
            k: &mut Kb,
            vs: &[Value],
            p: Value,
            count: Option<usize>,
            bv: Option<Value>,
        ) {
            let n = count.unwrap_or(4 * vs.len());
            for e in 0..n {
                let (v, lane) = (vs[e / 4], e % 4);
                if count.is_none() {
                    if lane == 0 {
                        self.fin(k, v, p, 4 * e as i64, bv);
                    }
                    continue;
                }
                let s = k.b.ins().extractlane(v, lane as u8);
                self.fin(k, s, p, 4 * e as i64, bv);
            }
        }

        /// Epilogue of one vector or float: the residual already in `y`,
        /// the bias, relu; then the store.
        fn fin(&self, k: &mut Kb, v: Value, p: Value, off: i64, bv: Option<Value>) {
            let ty = k.ty(v);
            let mut v = v;
            if self.w.g.accumulate {
                let old = k.load(ty, p, off);
                v = k.add(old, v);
            }
            if let Some(b) = bv {
                let b = if ty == VF { k.splat(b) } else { b };
                v = k.add(v, b);
            }
            if self.relu {
                let z = k.cst(ty, 0.0);
                v = k.max(v, z);
            }
            k.store(v, p, off);
        }
    }
}
