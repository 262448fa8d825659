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

use super::Level;

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
}

/// Elements of one output-channel block in [`pack_weights`]' layout.
pub fn block_len(s: &DirectConv) -> usize {
    let _ = s;
    unimplemented!("dconv::block_len")
}

/// Packs `w` (`[m, c, kh, kw]`, row-major) and `bias` (`[m]`) for the
/// whole conv: `m.div_ceil(16)` blocks of [`block_len`] elements.
pub fn pack_weights(s: &DirectConv, w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let _ = (s, w, bias);
    unimplemented!("dconv::pack_weights")
}

/// Assembles the kernel for `s`.
pub fn assemble(s: &DirectConv, level: Level) -> Result<Vec<u8>, String> {
    let _ = (s, level);
    Err("direct conv not assembled yet".into())
}
