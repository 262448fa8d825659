//! Channel-blocked layout kernels: the NCHW ↔ NCHWc conversions (a
//! transpose of each channel block against its pixels) and the direct
//! convolution `conv_blocked`, which calls the assembled AVX-512 kernel of
//! [`x86::dconv`] once per image and output-channel group, with the filters
//! and bias packed into one data object at compile time.

use super::kb::{Kb, PTR};
use super::{movement, parallel, x86};
use crate::ir::Window;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use x86::dconv::{self, DirectConv, CB};

/// `[n, c, h, w]` → `[n, c/cb, h, w, cb]`.
pub fn to_blocked(k: &mut Kb, shape: &[usize], cb: usize, x: Value, y: Value) {
    let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
    movement::transpose(k, &[n, c / cb, cb, hw], &[0, 1, 3, 2], x, y, 4);
}

/// `[n, cb_count, h, w, cb]` → `[n, cb_count·cb, h, w]`.
pub fn from_blocked(k: &mut Kb, shape: &[usize], x: Value, y: Value) {
    let (n, blocks, hw, cb) = (shape[0], shape[1], shape[2] * shape[3], shape[4]);
    movement::transpose(k, &[n, blocks, hw, cb], &[0, 1, 3, 2], x, y, 4);
}

/// The per-image kernel spec of a blocked conv over all its output blocks,
/// from the input shape (NCHW or blocked: only H and W are read), the
/// filters `[m, c, kh, kw]` and the output shape (OH, OW at dims 2, 3).
pub fn spec(
    window: &Window,
    x: &[usize],
    w: &[usize],
    y: &[usize],
    relu: bool,
    residual: bool,
    tile: Option<crate::ir::DirectTile>,
) -> DirectConv {
    DirectConv {
        c: w[1],
        h: x[2],
        w: x[3],
        m: w[0],
        oh: y[2],
        ow: y[3],
        kernel: [window.kernel[0], window.kernel[1]],
        strides: [window.strides[0], window.strides[1]],
        dil: [window.dilations[0], window.dilations[1]],
        pad: [window.pads[0], window.pads[1]],
        ocb0: 0,
        mb: w[0] / CB,
        relu,
        residual,
        tile,
    }
}

/// Output-channel blocks per task group: about a quarter of the blocks
/// (enough groups to feed a few threads), a whole number of the register
/// tile's `nb` blocks so that every group but the last runs only the
/// chosen tile (the last also takes the `mb mod nb` remainder, as the cost
/// model assumes).
fn group_blocks(mb: usize, nb: usize) -> usize {
    let nb = nb.max(1);
    ((mb / 4).div_ceil(nb) * nb).max(nb).min(mb.max(1))
}

/// The kernel's tiling for `whole`: the optimizer's, or the kernel rule's.
fn tile_of(whole: &DirectConv) -> crate::ir::DirectTile {
    whole.tile.unwrap_or_else(|| dconv::rule_tile(whole))
}

/// The per-group kernels of `whole` (see [`emit`]): all groups but the
/// last, and the last when it is shorter; then the group size and count.
pub fn group_specs(whole: &DirectConv) -> (DirectConv, Option<DirectConv>, usize, usize) {
    let mb = whole.mb.max(1);
    let tile = tile_of(whole);
    let gs = group_blocks(mb, tile.nb);
    let groups = mb.div_ceil(gs);
    let tail = mb - (groups - 1) * gs;
    let rest = DirectConv {
        mb: gs,
        tile: Some(tile),
        ..whole.clone()
    };
    let last = (tail != gs).then(|| DirectConv {
        ocb0: (groups - 1) * gs,
        mb: tail,
        tile: Some(tile),
        ..whole.clone()
    });
    (rest, last, gs, groups)
}

/// The AVX-512 kernels for `whole` assemble (the optimizer offers
/// `conv_blocked` only then, so codegen never meets one it cannot build).
pub fn assembles(whole: &DirectConv) -> bool {
    let (rest, last, _, _) = group_specs(whole);
    let ok = |s: &DirectConv| dconv::assemble(s, x86::Level::Avx512).is_ok();
    ok(&rest) && last.as_ref().is_none_or(ok)
}

/// Emits `conv_blocked` for `n` images; `w`/`bias` are the constant filters
/// and bias, `key` names them for the packed data object. False when the
/// target has no assembled kernel for this geometry.
#[allow(clippy::too_many_arguments)]
pub fn emit(
    k: &mut Kb,
    whole: &DirectConv,
    n: usize,
    x: Value,
    w: &[f32],
    bias: Option<&[f32]>,
    key: &str,
    residual: Option<Value>,
    out: Value,
) -> bool {
    let mb = whole.mb;
    let (rest_spec, tail_spec, gs, groups) = group_specs(whole);
    let Some(be) = k.asm() else {
        return false;
    };
    let mut f = |s: &DirectConv| be.func(&format!("dconv {s:?}"), &mut |l| dconv::assemble(s, l));
    // Groups of the same size compute the same code (M is a whole number
    // of blocks, so no group has zero lanes): one function unless the last
    // group is shorter.
    let Some(rest) = f(&rest_spec) else {
        return false;
    };
    let last = match &tail_spec {
        Some(s) => match f(s) {
            Some(l) => Some(l),
            None => return false,
        },
        None => None,
    };
    // The packing depends on the filters' geometry only (not on the tile
    // or epilogue): convs sharing the filters share the object.
    let data_key = format!("dconv {key} c{} m{} k{:?}", whole.c, whole.m, whole.kernel);
    let Some(data) = k.asm().and_then(|be| {
        be.data(&data_key, &mut || {
            dconv::pack_weights(whole, w, bias)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
    }) else {
        return false;
    };
    let gv = x86::backend::import_data(k.b.func, data);
    let wptr = k.b.ins().symbol_value(PTR, gv);
    let block_len = dconv::block_len(whole);
    let x_image = 4 * whole.c * whole.h * whole.w;
    let y_block = 4 * whole.oh * whole.ow * CB;
    let items = n * groups;
    let flops = 2 * n * whole.m * whole.c * whole.oh * whole.ow * whole.kernel[0] * whole.kernel[1];
    let tasks = parallel::tasks_for(items, flops, 1 << 21, 1 << 19, parallel::MAX_TASKS);
    let zero = k.iconst(0);
    let r = residual.unwrap_or(zero);
    parallel::parallel_items(k, items, tasks, &[x, wptr, r, out], &mut |k, c, i, _| {
        let img = k.b.ins().udiv_imm_u(i, groups as i64);
        let gi = k.b.ins().urem_imm_u(i, groups as i64);
        let xp = k.index(c[0], img, x_image as i64);
        let wp = k.index(c[1], gi, (4 * gs * block_len) as i64);
        let first_block = k.b.ins().imul_imm_u(img, mb as i64);
        let gb = k.b.ins().imul_imm_u(gi, gs as i64);
        let block = k.b.ins().iadd(first_block, gb);
        let yp = k.index(c[3], block, y_block as i64);
        let rp = if residual.is_some() {
            k.index(c[2], block, y_block as i64)
        } else {
            k.iconst(0)
        };
        let call = |k: &mut Kb, (fid, sig): &(cranelift_module::FuncId, cranelift_codegen::ir::Signature)| {
            let fref = x86::backend::import_function(k.b.func, *fid, sig.clone());
            k.b.ins().call(fref, &[xp, wp, rp, yp]);
        };
        match &last {
            None => call(k, &rest),
            Some(last) => {
                let is_last = k.b.ins().icmp_imm_s(IntCC::Equal, gi, groups as i64 - 1);
                k.if_else(is_last, |k| call(k, last), |k| call(k, &rest));
            }
        }
    });
    true
}
