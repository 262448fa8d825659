//! Convolution as GEMM: pointwise convs multiply the weights by the input
//! directly; others unfold the input (im2col) into scratch first. Both use
//! the register-blocked GEMM with the bias in its epilogue. A fused max
//! pool (`ConvGeom::pool`) sends each chunk's product to a scratch tile and
//! pools it from there, so the conv output never reaches memory.

use super::gemm::{self, Bias, GemmSpec, Strides};
use super::kb::{InsExt, Kb};
use super::movement;
use super::parallel;
use super::pool::{self, PoolGeom};
use super::x86;
use super::x86::im2col as x86im2col;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

/// A 2-D view of a 1-D or 2-D convolution (1-D has H = KH = 1).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    pub dil: [usize; 2],
    /// Begin pads (end pads only shape the output size).
    pub pad: [usize; 2],
    pub group: usize,
    /// Output rows unfolded per im2col chunk (divides `oh`): the tiling
    /// parameter that keeps the unfolded block cache-resident.
    pub chunk_rows: usize,
    /// The output already holds an addend (a fused residual): the GEMMs add
    /// into it (bias == C) instead of a per-channel bias.
    pub accumulate: bool,
    /// A fused max pool (2-D im2col convs only): `h`/`w` are the conv's
    /// `oh`/`ow`, `oh`/`ow` the pooled extent (`planes` is unused). Each
    /// chunk of `chunk_rows` *pooled* rows computes the conv rows its
    /// windows need into a cache-resident tile and pools from there, so
    /// the conv's output never goes to memory.
    pub pool: Option<PoolGeom>,
}

impl ConvGeom {
    pub fn is_pointwise(&self) -> bool {
        // The output must also be exactly the input plane: a 1×1 conv with
        // only *end* padding has a larger output (zero-padded border rows and
        // columns) and used to be multiplied as if it were H·W wide.
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.oh == self.h
            && self.ow == self.w
            && self.pool.is_none()
    }

    /// Pooled rows per chunk (a divisor of the pooled height), when a pool is fused.
    fn pooled_rows(&self) -> Option<usize> {
        let p = self.pool.as_ref()?;
        let r = self.chunk_rows.clamp(1, p.oh.max(1));
        Some(if p.oh.is_multiple_of(r) {
            r
        } else {
            p.oh.max(1)
        })
    }

    /// Chunks of the conv (of `rows()` rows, or of pooled rows when fused).
    fn chunk_count(&self) -> usize {
        match (&self.pool, self.pooled_rows()) {
            (Some(p), Some(pr)) => p.oh.max(1) / pr,
            _ => self.oh.max(1) / self.rows(),
        }
    }

    /// First conv row of fused chunk `ch`: where its first window starts,
    /// shifted to keep all `rows()` rows inside the conv output (the tile
    /// then still holds every row the chunk's windows read; rows outside
    /// them are recomputed or unused).
    fn pooled_r0(&self, ch: usize) -> usize {
        let (p, pr) = (
            self.pool.as_ref().expect("fused pool"),
            self.pooled_rows().unwrap_or(1),
        );
        let start = (ch * pr * p.stride[0]) as i64 - p.pad_begin[0] as i64;
        start.clamp(0, (self.oh - self.rows()) as i64) as usize
    }

    /// Bytes of the conv-output tile of a fused pool chunk of `rows` conv rows.
    fn tile_bytes(&self, rows: usize) -> usize {
        if self.pool.is_some() {
            4 * (self.m / self.group) * rows * self.ow
        } else {
            0
        }
    }

    /// Bytes of im2col scratch (0 for pointwise convs).
    pub fn scratch_bytes(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.block_bytes(self.rows())
        }
    }

    /// Bytes of one im2col block of `rows` output rows.
    /// Columns are rounded up to whole 16-lane vectors: the assembled
    /// im2col writes the GEMM's packed layout, whose tail panel is padded.
    fn block_bytes(&self, rows: usize) -> usize {
        let n = rows * self.ow;
        let col = 4 * (self.c / self.group) * self.kh * self.kw * n.next_multiple_of(16);
        col + if self.transposable(rows) {
            4 * n * self.m
        } else {
            0
        } + self.tile_bytes(rows)
    }

    /// Chunks of `rows` output rows narrower than a few vectors leave many
    /// lanes of a column panel idle (N = 49 uses 49 of 64). Such convs may
    /// compute the transposed product `colᵀ·Wᵀ` (output channels as
    /// columns, weights pre-packed at compile time) into scratch and
    /// transpose it: this reserves that scratch. Large weights are fine
    /// (streamed once, the next panel prefetched) as long as K is split so
    /// the unfolded block stays in L2 (see `Items::transposed`): ResNet's
    /// layer-4 convs run 15–20% faster than the strided-broadcast way.
    /// Wider chunks gain nothing: layer 3's N = 196 (4 of 64 lanes idle in
    /// the last panel, 14×14 tiles exact when transposed) measured the same.
    fn transposable(&self, rows: usize) -> bool {
        let n = rows * self.ow;
        self.group == 1 && n < 64 && !n.is_multiple_of(16) && self.m >= 32 && self.stride[1] <= 2
    }

    /// (image, group, chunk) items with chunks of `rows` output rows.
    fn items_of(&self, rows: usize) -> usize {
        let chunks = if self.scratch_bytes() == 0 {
            1
        } else if self.pool.is_some() {
            self.chunk_count()
        } else {
            self.oh.max(1) / rows
        };
        self.n * self.group * chunks
    }

    /// Rows per chunk when chunks run as parallel tasks. Per element the
    /// result does not depend on the chunking, so tasks may use smaller
    /// chunks than the serial code: the largest divisor of `oh` in
    /// [rows/2, rows] whose item count splits evenly over 2 and 4 threads
    /// (a multiple of 4, or at least 16), else `rows`. (ResNet's 56-row
    /// layers: 7 chunks of 8 rows serially, 8 chunks of 7 in parallel.)
    pub fn par_rows(&self) -> usize {
        let rows = self.rows();
        // Fused pool chunks follow the pooled rows: one chunking.
        if self.scratch_bytes() == 0 || self.pool.is_some() {
            return rows;
        }
        let even = |r: usize| {
            let it = self.items_of(r);
            it.is_multiple_of(4) || it >= 16
        };
        (rows.div_ceil(2)..=rows)
            .rev()
            .find(|&r| self.oh.max(1).is_multiple_of(r) && even(r))
            .unwrap_or(rows)
    }

    /// Parallel tasks over the items (of `par_rows` chunks), each a
    /// contiguous range of them with its own im2col slot. 1: the items run
    /// in order and each GEMM splits instead (few items, e.g. one chunk of
    /// a late ResNet layer).
    pub fn item_tasks(&self) -> usize {
        let items = self.items_of(self.par_rows());
        if items < 4 {
            return 1;
        }
        let macs = self.n * self.m * self.oh * self.ow * (self.c / self.group) * self.kh * self.kw;
        let max = if self.scratch_bytes() > 0 {
            parallel::MAX_SLOTS
        } else {
            parallel::MAX_TASKS
        };
        parallel::tasks_for(items, macs, 1 << 19, 1 << 18, max)
    }

    /// im2col scratch for all slots (what the planner must allocate): one
    /// serial block, or one smaller block per parallel task.
    pub fn total_scratch_bytes(&self) -> usize {
        let par = self.block_bytes(self.par_rows()) * self.item_tasks();
        if self.scratch_bytes() == 0 {
            0
        } else {
            self.scratch_bytes().max(par)
        }
    }

    /// Rows per chunk, sanitized (a divisor of `oh`, at least 1). With a
    /// fused pool: the conv rows one chunk of pooled rows reads (at most `oh`).
    pub fn rows(&self) -> usize {
        if let (Some(p), Some(pr)) = (&self.pool, self.pooled_rows()) {
            let need = (pr - 1) * p.stride[0] + (p.k[0] - 1) * p.dil[0] + 1;
            return need.min(self.oh.max(1));
        }
        let r = self.chunk_rows.clamp(1, self.oh.max(1));
        if self.oh.is_multiple_of(r) {
            r
        } else {
            self.oh.max(1)
        }
    }
}

/// Output index range [lo, hi) whose input coordinate `o·s − p + kk·d` lies in [0, size).
fn valid_range(out: usize, size: usize, s: usize, p: usize, d: usize, kk: usize) -> (usize, usize) {
    let off = kk as i64 * d as i64 - p as i64;
    let mut lo = out;
    let mut hi = 0;
    for o in 0..out {
        let i = o as i64 * s as i64 + off;
        if i >= 0 && i < size as i64 {
            lo = lo.min(o);
            hi = o + 1;
        }
    }
    if lo >= hi {
        (0, 0)
    } else {
        (lo, hi)
    }
}

#[allow(clippy::too_many_arguments)]
pub fn emit(
    k: &mut Kb,
    g: &ConvGeom,
    x: Value,
    w: Value,
    bias: Option<Value>,
    y: Value,
    scratch: Option<Value>,
    relu: bool,
    wconst: Option<&gemm::ConstB>,
) {
    let pointwise = g.is_pointwise() || g.scratch_bytes() == 0;
    // No scratch also when it would be empty (zero input channels: K = 0
    // and the GEMM never reads B; the planner allocates nothing).
    let scratch = if pointwise {
        None
    } else {
        Some(scratch.expect("planner allocates im2col scratch"))
    };
    let mut caps = vec![x, w, y];
    caps.extend(scratch);
    caps.extend(bias);
    let rows = if pointwise { g.oh.max(1) } else { g.rows() };
    let serial = Items::new(g, rows, pointwise, bias.is_some(), relu, wconst);
    let tasks = g.item_tasks();
    let prows = if pointwise { rows } else { g.par_rows() };
    if prows == rows || tasks <= 1 || k.threads.is_none() {
        // On two threads, two tasks: each reuses one cache-warm im2col
        // slot for all its chunks (a slot per task made every task unfold
        // into cold memory, ResNet's layer-1 im2col ~35% slower).
        parallel::two_or(k, tasks, &mut |k, tasks| {
            parallel::parallel_items(k, serial.count(), tasks, &caps, &mut |k, p, it, slot| {
                serial.emit(k, p, it, slot)
            })
        });
        return;
    }
    // Tasks take finer chunks than the serial code (see `par_rows`).
    let par = Items::new(g, prows, pointwise, bias.is_some(), relu, wconst);
    parallel::two_or(k, tasks, &mut |k, tasks| {
        parallel::parallel_items_or(
            k,
            par.count(),
            tasks,
            &caps,
            &mut |k, p, it, slot| par.emit(k, p, it, slot),
            Some(&mut |k: &mut Kb| {
                let zero = k.iconst(0);
                k.for_range(0, serial.count() as i64, 1, |k, it| {
                    serial.emit(k, &caps, it, zero)
                });
            }),
        )
    });
}

/// The (image, group, chunk) items of a conv with chunks of `rows` output
/// rows (one chunk of all rows when pointwise).
struct Items<'g> {
    g: &'g ConvGeom,
    /// The weights when constant (for the transposed product).
    wconst: Option<&'g gemm::ConstB<'g>>,
    rows: usize,
    chunks: usize,
    spec: GemmSpec,
    pointwise: bool,
    has_bias: bool,
}

impl<'g> Items<'g> {
    fn new(
        g: &'g ConvGeom,
        rows: usize,
        pointwise: bool,
        has_bias: bool,
        relu: bool,
        wconst: Option<&'g gemm::ConstB<'g>>,
    ) -> Self {
        let kdim = g.c / g.group * g.kh * g.kw;
        let ohw = g.oh * g.ow;
        let spec = GemmSpec {
            tile: None,
            m: g.m / g.group,
            n: if pointwise { ohw } else { rows * g.ow },
            k: kdim,
            a: Strides { row: kdim, col: 1 },
            b_row: if pointwise { g.h * g.w } else { rows * g.ow },
            // A fused pool's product goes to the chunk's tile.
            c_row: if g.pool.is_some() { rows * g.ow } else { ohw },
            alpha: 1.0,
            bias: if g.accumulate {
                Some(Bias {
                    strides: Strides { row: ohw, col: 1 },
                    beta: 1.0,
                })
            } else {
                has_bias.then_some(Bias {
                    strides: Strides { row: 1, col: 0 },
                    beta: 1.0,
                })
            },
            relu,
        };
        let chunks = if pointwise {
            1
        } else if g.pool.is_some() {
            g.chunk_count()
        } else {
            g.oh.max(1) / rows
        };
        Items {
            g,
            wconst,
            rows,
            chunks,
            spec,
            pointwise,
            has_bias,
        }
    }

    /// First output row of chunk `ch` (a conv row, also with a fused pool).
    fn r0_of(&self, ch: usize) -> usize {
        if self.g.pool.is_some() {
            self.g.pooled_r0(ch)
        } else {
            ch * self.rows
        }
    }

    fn count(&self) -> usize {
        self.g.n * self.g.group * self.chunks
    }

    /// Item `it`; `p` = [x, w, y, scratch (unless pointwise), bias?]; its
    /// im2col block is scratch slot `slot`.
    fn emit(&self, k: &mut Kb, p: &[Value], it: Value, slot: Value) {
        let g = self.g;
        let (cg, mg) = (g.c / g.group, g.m / g.group);
        let kdim = self.spec.k;
        let (x, w, y) = (p[0], p[1], p[2]);
        let s = (!self.pointwise).then(|| p[3]);
        let bias = self.has_bias.then(|| p[3 + s.is_some() as usize]);
        // item = ((image·group + grp)·chunks + chunk)
        let (ng, chunk) = if self.chunks == 1 {
            (it, None)
        } else {
            let ng = k.b.ins().udiv_imm_u(it, self.chunks as i64);
            (ng, Some(k.b.ins_urem(it, self.chunks as i64)))
        };
        let grp = (g.group > 1).then(|| k.b.ins_urem(ng, g.group as i64));
        let xin = k.index(x, ng, (4 * cg * g.h * g.w) as i64);
        let out_plane = g.pool.as_ref().map_or(g.oh * g.ow, |p| p.oh * p.ow);
        let c = k.index(y, ng, (4 * mg * out_plane) as i64);
        let (a, bi) = match grp {
            Some(grp) => (
                k.index(w, grp, (4 * mg * kdim) as i64),
                bias.map(|p| k.index(p, grp, (4 * mg) as i64)),
            ),
            None => (w, bias),
        };
        let Some(s) = s else {
            let bi = if g.accumulate { Some(c) } else { bi };
            gemm::emit(k, &self.spec, a, xin, c, bi);
            return;
        };
        // One chunk of `rows` output rows: unfold, then multiply into C's columns.
        let s = k.index(s, slot, g.block_bytes(self.rows) as i64);
        let r0 = match (chunk, &g.pool) {
            (Some(ch), Some(p)) => {
                // max(0, min(ch·pr·s − pb, oh − rows)) (see `pooled_r0`)
                let pr = g.pooled_rows().unwrap_or(1);
                let t = k.b.ins().imul_imm_s(ch, (pr * p.stride[0]) as i64);
                let t = k.b.ins().iadd_imm_s(t, -(p.pad_begin[0] as i64));
                let hi = k.iconst((g.oh - self.rows) as i64);
                let t = k.b.ins().smin(t, hi);
                let zero = k.iconst(0);
                k.b.ins().smax(t, zero)
            }
            (Some(ch), None) => k.b.ins().imul_imm_s(ch, self.rows as i64),
            (None, _) => k.iconst(0),
        };
        let cc = if g.pool.is_some() {
            k.offset(
                s,
                (g.block_bytes(self.rows) - g.tile_bytes(self.rows)) as i64,
            )
        } else {
            k.index(c, r0, (4 * g.ow) as i64)
        };
        let bi = if g.accumulate { Some(cc) } else { bi };
        if !self.transposed(k, xin, s, r0, chunk, cc, bi) {
            let nr = if g.stride[1] <= 2 {
                gemm::packed_b_nr(k, &self.spec)
            } else {
                None
            };
            if nr.is_some_and(|nr| self.packed_im2col(k, xin, s, r0, chunk, nr)) {
                gemm::emit_packed_b(k, &self.spec, a, s, cc, bi);
            } else {
                im2col(k, g, xin, s, r0, self.rows);
                gemm::emit(k, &self.spec, a, s, cc, bi);
            }
        }
        if g.pool.is_some() {
            self.pool_tile(k, cc, c, chunk);
        }
    }

    /// Max-pools the tile of chunk `chunk` into its band of pooled rows of
    /// the output planes at `c`. The tile's position relative to the
    /// windows differs only at the ends (clamped first/last chunks): one
    /// static pool per distinct position, picked by chunk index.
    fn pool_tile(&self, k: &mut Kb, tile: Value, c: Value, chunk: Option<Value>) {
        let g = self.g;
        let p = g.pool.as_ref().expect("fused pool");
        let pr = g.pooled_rows().unwrap_or(1);
        let rows = self.rows;
        let mg = g.m / g.group;
        // Chunk ch's first window starts `off` rows into its tile (negative:
        // above it, in the padding).
        let geom = |ch: usize| -> (PoolGeom, usize) {
            let off =
                (ch * pr * p.stride[0]) as i64 - p.pad_begin[0] as i64 - g.pooled_r0(ch) as i64;
            let skip = off.max(0) as usize;
            let pg = PoolGeom {
                planes: mg,
                h: rows - skip,
                oh: pr,
                pad_begin: [(-off).max(0) as usize, p.pad_begin[1]],
                ..p.clone()
            };
            (pg, skip)
        };
        let mut groups: Vec<PoolGroup> = Vec::new();
        for ch in 0..self.chunks {
            let key = geom(ch);
            match groups.iter_mut().find(|e| e.0 == key) {
                Some(e) => e.1.push(ch),
                None => groups.push((key, vec![ch])),
            }
        }
        groups.sort_by_key(|e| std::cmp::Reverse(e.1.len()));
        let dst = match chunk {
            Some(ch) => k.index(c, ch, (4 * pr * p.ow) as i64),
            None => c,
        };
        let y_plane = p.oh * p.ow;
        let run = |k: &mut Kb, (pg, skip): &(PoolGeom, usize)| {
            let src = k.offset(tile, (4 * skip * g.ow) as i64);
            pool::emit_strided(k, pg, src, dst, rows * g.ow, y_plane);
        };
        let order: Vec<usize> = (0..groups.len()).collect();
        pool_dispatch(k, &groups, &order, chunk, &run);
    }

    /// The chunk as `Cᵀ = colᵀ·Wᵀ` (see [`ConvGeom::transposable`]): the
    /// im2col writes `[K, wt]` rows (wt = N rounded up to 16), read as Aᵀ
    /// with unit row stride; the weights are B, pre-packed at compile time;
    /// the `[N, M]` product lands in scratch after the im2col block and is
    /// transposed into the output (added to it, then relu, when the output
    /// holds a fused residual). False (nothing emitted) when unavailable.
    #[allow(clippy::too_many_arguments)]
    fn transposed(
        &self,
        k: &mut Kb,
        x: Value,
        col: Value,
        r0: Value,
        chunk: Option<Value>,
        cc: Value,
        bias: Option<Value>,
    ) -> bool {
        let g = self.g;
        let Some(wc) = self.wconst else { return false };
        if !g.transposable(self.rows) || std::env::var_os("NNC_NO_CONV_T").is_some() {
            return false;
        }
        let (n, m, kdim) = (self.spec.n, self.spec.m, self.spec.k);
        let wt = n.next_multiple_of(16);
        // The kernel rereads all of A (colᵀ, K·wt floats) for every 32-column
        // panel of B while streaming that panel and prefetching the next:
        // split K so A and two panels stay within ~768 KiB of the 2 MiB L2
        // (ResNet's 512×4608 layer-4 weights: 3 slices; unsplit, L2
        // thrashes and it measured 40% slower than the normal orientation,
        // split 20% faster; 2 or 5 slices within 1–2%).
        let slices = (4 * kdim * (wt + 64))
            .div_ceil(3 << 18)
            .clamp(1, kdim.div_ceil(4).max(1));
        let kc = kdim.div_ceil(slices).next_multiple_of(4);
        let ranges: Vec<(usize, usize)> = (0..kdim)
            .step_by(kc.max(1))
            .map(|k0| (k0, kc.min(kdim - k0)))
            .collect();
        let last = ranges.len() - 1;
        let ct = k.offset(col, (4 * kdim * wt) as i64);
        let spec_of = |i: usize, kk: usize| GemmSpec {
            tile: None,
            m: n,
            n: m,
            k: kk,
            a: Strides { row: 1, col: wt },
            b_row: m,
            c_row: m,
            alpha: 1.0,
            // Later slices add onto the earlier ones' sums (bias == C). With
            // a fused residual the product is added (and relu applied)
            // while transposing back.
            bias: if i > 0 {
                Some(Bias {
                    strides: Strides { row: m, col: 1 },
                    beta: 1.0,
                })
            } else {
                (self.has_bias && !g.accumulate).then_some(Bias {
                    strides: Strides { row: 0, col: 1 },
                    beta: 1.0,
                })
            },
            relu: self.spec.relu && !g.accumulate && i == last,
        };
        let bias_of = |i: usize| {
            if i > 0 {
                Some(ct)
            } else if g.accumulate {
                None
            } else {
                bias
            }
        };
        let avail = ranges
            .iter()
            .enumerate()
            .all(|(i, &(_, kk))| gemm::const_b_available(k, &spec_of(i, kk), bias_of(i)));
        if !avail || k.asm().map(|be| be.level()) != Some(x86::Level::Avx512) {
            return false;
        }
        if !self.packed_im2col(k, x, col, r0, chunk, wt) {
            return false;
        }
        // Weights are [M, K] = Bᵀ: each slice's columns, [M, kk].
        let parts: Vec<(String, Vec<f32>)> = if ranges.len() == 1 {
            Vec::new()
        } else {
            ranges
                .iter()
                .map(|&(k0, kk)| {
                    let d = (0..m)
                        .flat_map(|j| wc.data[j * kdim + k0..j * kdim + k0 + kk].iter().copied())
                        .collect();
                    (format!("{} k{k0}+{kk}", wc.key), d)
                })
                .collect()
        };
        let wk = |i: usize| match parts.get(i) {
            Some((key, d)) => gemm::ConstB {
                key: key.clone(),
                data: d,
                transposed: true,
            },
            None => gemm::ConstB {
                key: wc.key.clone(),
                data: wc.data,
                transposed: wc.transposed,
            },
        };
        // y[i, j] = ct[j, i] for output channels i in [lo, lo + len)
        // (accumulating: relu(y[i, j] + ct[j, i]), the residual's sum as the
        // GEMM epilogue would form it), rows of the output strided by the plane.
        let (c_row, acc, relu) = (self.spec.c_row, g.accumulate, self.spec.relu);
        let transpose = |k: &mut Kb, ct: Value, cc: Value, lo: Value, len: usize| {
            let f32t = cranelift_codegen::ir::types::F32;
            k.for_range(0, len as i64, 1, |k, ii| {
                let i = k.b.ins().iadd(lo, ii);
                let src = k.index(ct, i, 4);
                let dst = k.index(cc, i, (4 * c_row) as i64);
                let zero = (acc && relu).then(|| k.b.ins().f32const(0.0));
                for j in 0..n {
                    let mut v = k.load(f32t, src, (4 * j * m) as i64);
                    if acc {
                        let y = k.load(f32t, dst, (4 * j) as i64);
                        v = k.b.ins().fadd(v, y);
                        if let Some(z) = zero {
                            v = k.b.ins().fmax(v, z);
                        }
                    }
                    k.store(v, dst, (4 * j) as i64);
                }
            });
        };
        let whole = |k: &mut Kb, col: Value, ct: Value, cc: Value, bias: Option<Value>| {
            for (i, &(k0, kk)) in ranges.iter().enumerate() {
                let ai = k.offset(col, (4 * k0 * wt) as i64);
                let bi = if i > 0 {
                    Some(ct)
                } else {
                    bias_of(i).and(bias)
                };
                let ok = gemm::emit_const_b(k, &spec_of(i, kk), ai, &wk(i), ct, bi);
                assert!(ok, "transposed conv GEMM declined after const_b_available");
            }
            let zero = k.iconst(0);
            transpose(k, ct, cc, zero, m);
        };
        // With threads: tasks own blocks of output channels (columns of the
        // product) and run every K slice on them, then transpose them back:
        // one parallel_for per conv instead of one per slice plus a serial
        // transpose. Each element keeps its slice order, so results match.
        // Blocks of output channels: as few as the threads need (two
        // 256-column blocks measured 3% faster on the model at 2 threads
        // than 4, and 8 slower still: narrower pieces reread colᵀ for fewer
        // panels), 4 for more threads.
        let blocks = 4;
        let split = k.threads.is_some()
            && m.is_multiple_of(blocks)
            && [2, blocks].iter().all(|&b| {
                ranges.iter().enumerate().all(|(i, &(_, kk))| {
                    gemm::const_b_cols_ok(k, &spec_of(i, kk), bias_of(i).is_some(), m / b)
                })
            });
        if !split {
            whole(k, col, ct, cc, bias);
            return true;
        }
        let mut caps = vec![col, ct, cc];
        caps.extend(bias);
        let has_bias = bias.is_some();
        parallel::two_or(k, blocks, &mut |k, blocks| {
            let block = m / blocks;
            parallel::parallel(
                k,
                blocks,
                &caps,
                &mut |k, p, t, _| {
                    let (col, ct, cc) = (p[0], p[1], p[2]);
                    let bias = has_bias.then(|| p[3]);
                    let at = k.b.ins().imul_imm_s(t, block as i64);
                    for (i, &(k0, kk)) in ranges.iter().enumerate() {
                        let ai = k.offset(col, (4 * k0 * wt) as i64);
                        let bi = if i > 0 {
                            Some(ct)
                        } else {
                            bias_of(i).and(bias)
                        };
                        let ok = gemm::emit_const_b_cols(
                            k,
                            &spec_of(i, kk),
                            ai,
                            &wk(i),
                            ct,
                            bi,
                            at,
                            block,
                        );
                        assert!(ok, "transposed conv GEMM declined after const_b_cols_ok");
                    }
                    transpose(k, ct, cc, at, block);
                },
                Some(&mut |k: &mut Kb| {
                    // Serial (one thread): the whole products, nothing split.
                    let threads = k.threads.take();
                    whole(k, col, ct, cc, bias);
                    k.threads = threads;
                }),
            );
        });
        true
    }

    /// Unfolds the chunk at `r0` with the assembled im2col straight into
    /// the packed B layout of the GEMM, when the target has both (AVX-512,
    /// unit column stride). False (nothing emitted) otherwise.
    fn packed_im2col(
        &self,
        k: &mut Kb,
        x: Value,
        col: Value,
        r0: Value,
        chunk: Option<Value>,
        nr: usize,
    ) -> bool {
        let g = self.g;
        if g.stride[1] > 2 || std::env::var_os("NNC_NO_ASM_IM2COL").is_some() {
            return false;
        }
        let kdim = self.spec.k;
        // Chunks with the same output-row validity share one function.
        let mut groups: Vec<(x86im2col::Im2col, Vec<usize>)> = Vec::new();
        for ch in 0..self.chunks {
            let mut row_ok = Vec::with_capacity(self.rows * g.kh);
            for rr in 0..self.rows {
                for t in 0..g.kh {
                    let ih = ((self.r0_of(ch) + rr) * g.stride[0] + t * g.dil[0]) as i64
                        - g.pad[0] as i64;
                    row_ok.push((0..g.h as i64).contains(&ih));
                }
            }
            let spec = x86im2col::Im2col {
                w: g.w,
                plane: g.h * g.w,
                kh: g.kh,
                kw: g.kw,
                stride_h: g.stride[0],
                stride_w: g.stride[1],
                dil: g.dil,
                pad: g.pad,
                rows: self.rows,
                ow: g.ow,
                row_ok,
                nr,
                k: kdim,
            };
            match groups.iter_mut().find(|e| e.0 == spec) {
                Some(e) => e.1.push(ch),
                None => groups.push((spec, vec![ch])),
            }
        }
        // The largest group is the fallthrough; the others are tested one
        // chunk index at a time.
        groups.sort_by_key(|e| std::cmp::Reverse(e.1.len()));
        let tested: usize = groups[1..].iter().map(|e| e.1.len()).sum();
        if tested > 8 || groups[0].0.vectors() > x86im2col::MAX_VECTORS {
            return false;
        }
        let mut fns = Vec::new();
        for (spec, chunks) in &groups {
            let key = format!("im2col {spec:?}");
            let Some(be) = k.asm() else { return false };
            let Some(f) = be.func(&key, &mut |_| x86im2col::assemble(spec)) else {
                return false;
            };
            fns.push((f, chunks.clone()));
        }
        let (full, _) = groups[0].0.panels();
        let taps = g.kh * g.kw;
        let (wt, cg) = (groups[0].0.panels().1, g.c / g.group);
        let xb = k.index(x, r0, (4 * g.stride[0] * g.w) as i64);
        let colt = k.offset(col, (4 * full * nr * kdim) as i64);
        let chunk = chunk.unwrap_or(r0);
        let width = self.rows * g.ow;
        let tasks =
            parallel::tasks_for(cg, cg * taps * width, 1 << 16, 1 << 14, parallel::MAX_TASKS);
        let call = |k: &mut Kb, x: Value, col: Value, colt: Value, nch: Value, chunk: Value| {
            dispatch(k, &fns, chunk, &[x, col, colt, nch]);
        };
        if tasks <= 1 || k.threads.is_none() {
            let nch = k.iconst(cg as i64);
            call(k, xb, col, colt, nch, chunk);
        } else {
            // Channels write disjoint rows of every panel.
            parallel::parallel_items(k, cg, tasks, &[xb, col, colt, chunk], &mut |k, p, c, _| {
                let x = k.index(p[0], c, (4 * g.h * g.w) as i64);
                let col = k.index(p[1], c, (4 * taps * nr) as i64);
                let colt = k.index(p[2], c, (4 * taps * wt) as i64);
                let one = k.iconst(1);
                call(k, x, col, colt, one, p[3]);
            });
        }
        true
    }
}

pub(super) type AsmFn = (cranelift_module::FuncId, cranelift_codegen::ir::Signature);

/// Calls the function of the group holding `chunk` (the first is the default).
pub(super) fn dispatch(k: &mut Kb, fns: &[(AsmFn, Vec<usize>)], chunk: Value, args: &[Value]) {
    let call = |k: &mut Kb, f: &AsmFn| {
        let fref = x86::backend::import_function(k.b.func, f.0, f.1.clone());
        k.b.ins().call(fref, args);
    };
    let Some((last, rest)) = fns[1..].split_last() else {
        call(k, &fns[0].0);
        return;
    };
    let mut cond = None;
    for &ch in &last.1 {
        let eq = k.b.ins().icmp_imm_s(IntCC::Equal, chunk, ch as i64);
        cond = Some(match cond {
            Some(c) => k.b.ins().bor(c, eq),
            None => eq,
        });
    }
    let mut others = vec![fns[0].clone()];
    others.extend(rest.iter().cloned());
    k.if_else(
        cond.expect("group has a chunk"),
        |k| call(k, &last.0),
        |k| dispatch(k, &others, chunk, args),
    );
}

/// Runs the group (of `order`, indices into `groups`) holding `chunk`;
/// the first is the default.
fn pool_dispatch(
    k: &mut Kb,
    groups: &[PoolGroup],
    order: &[usize],
    chunk: Option<Value>,
    run: &dyn Fn(&mut Kb, &(PoolGeom, usize)),
) {
    let (Some(chunk), Some((&last, rest))) = (chunk, order[1..].split_last()) else {
        run(k, &groups[order[0]].0);
        return;
    };
    let mut cond = None;
    for &ch in &groups[last].1 {
        let eq = k.b.ins().icmp_imm_s(IntCC::Equal, chunk, ch as i64);
        cond = Some(match cond {
            Some(c) => k.b.ins().bor(c, eq),
            None => eq,
        });
    }
    let mut others = vec![order[0]];
    others.extend_from_slice(rest);
    k.if_else(
        cond.expect("group has a chunk"),
        |k| run(k, &groups[last].0),
        |k| pool_dispatch(k, groups, &others, Some(chunk), run),
    );
}

/// A fused pool's tile geometry (and rows skipped) with its chunks.
type PoolGroup = ((PoolGeom, usize), Vec<usize>);

/// Unfolds output rows r0..r0+rows of one group of one image: row
/// (c, kh, kw), column (oh − r0, ow).
fn im2col(k: &mut Kb, g: &ConvGeom, x: Value, col: Value, r0: Value, rows: usize) {
    let cg = g.c / g.group;
    let width = rows * g.ow;
    let taps = g.kh * g.kw;
    // Channels write disjoint rows: split them when the block is large
    // (only outside item tasks, i.e. when the conv has few items).
    let tasks = parallel::tasks_for(cg, cg * taps * width, 1 << 16, 1 << 14, parallel::MAX_TASKS);
    parallel::parallel_items(k, cg, tasks, &[x, col, r0], &mut |k, p, c, _| {
        let (x, col, r0) = (p[0], p[1], p[2]);
        let xc = k.index(x, c, (4 * g.h * g.w) as i64);
        let rowsp = k.index(col, c, (4 * taps * width) as i64);
        for kh in 0..g.kh {
            let (h_lo, h_hi) = valid_range(g.oh, g.h, g.stride[0], g.pad[0], g.dil[0], kh);
            for kw in 0..g.kw {
                let (w_lo, w_hi) = valid_range(g.ow, g.w, g.stride[1], g.pad[1], g.dil[1], kw);
                let row = k.offset(rowsp, (4 * (kh * g.kw + kw) * width) as i64);
                if h_lo >= h_hi || w_lo >= w_hi {
                    movement::fill_zero(k, row, 4 * width);
                    continue;
                }
                k.for_range(0, rows as i64, 1, |k, rr| {
                    let dst = k.index(row, rr, (4 * g.ow) as i64);
                    let oh = k.b.ins().iadd(r0, rr);
                    // Rows whose input row falls in the padding are zero.
                    let lo =
                        k.b.ins()
                            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, oh, h_lo as i64);
                    let hi = k.b.ins().icmp_imm_s(IntCC::SignedLessThan, oh, h_hi as i64);
                    let inside = k.b.ins().band(lo, hi);
                    let copy_row = |k: &mut Kb| {
                        // input row ih = oh·s − p + kh·d
                        let ih = k.b_ins_imul_add(
                            oh,
                            g.stride[0] as i64,
                            kh as i64 * g.dil[0] as i64 - g.pad[0] as i64,
                        );
                        let src_row = k.index(xc, ih, (4 * g.w) as i64);
                        movement::fill_zero(k, dst, 4 * w_lo);
                        let dtail = k.offset(dst, (4 * w_hi) as i64);
                        movement::fill_zero(k, dtail, 4 * (g.ow - w_hi));
                        let iw0 = (w_lo * g.stride[1] + kw * g.dil[1]) as i64 - g.pad[1] as i64;
                        let src = k.offset(src_row, 4 * iw0);
                        let dst = k.offset(dst, (4 * w_lo) as i64);
                        let cnt = w_hi - w_lo;
                        if g.stride[1] == 1 {
                            movement::copy(k, dst, src, cnt, 4);
                        } else {
                            let s = g.stride[1] as i64;
                            k.for_range(0, cnt as i64, 1, |k, i| {
                                let p = k.index(src, i, 4 * s);
                                let v = k.load(cranelift_codegen::ir::types::F32, p, 0);
                                k.store_at(v, dst, i);
                            });
                        }
                    };
                    k.if_else(inside, copy_row, |k| movement::fill_zero(k, dst, 4 * g.ow));
                });
            }
        }
    });
}
