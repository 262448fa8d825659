//! Floating-point operation counts, for GFLOP/s reports (multiply-add = 2).

use super::{Graph, Op, ValueKind};

/// FLOPs of one run of `g` (matmul-like ops exactly; elementwise and
/// reductions one per element touched; data movement zero).
pub fn flops(g: &Graph) -> u64 {
    let mut total = 0u64;
    for v in &g.values {
        let ValueKind::Op { op, args } = &v.kind else {
            continue;
        };
        let out = v.ty.numel() as u64;
        let arg = |i: usize| g.ty(args[i]);
        total += match op.base() {
            Op::MatMul => {
                let a = arg(0);
                let k = *a.shape.last().unwrap_or(&1) as u64;
                2 * out * k
            }
            Op::Gemm { trans_a, .. } => {
                let a = arg(0);
                let k = if *trans_a { a.shape[0] } else { a.shape[1] } as u64;
                2 * out * k
            }
            Op::Conv { window, group } | Op::ConvImpl { window, group, .. } => {
                let w = arg(1);
                let per_out: u64 =
                    w.shape[1] as u64 * window.kernel.iter().map(|&k| k as u64).product::<u64>();
                // A fused pool: count the conv's own (unpooled) outputs.
                let conv = Op::Conv {
                    window: window.clone(),
                    group: *group,
                };
                let out = conv
                    .infer(&[arg(0), arg(1)])
                    .map_or(out, |t| t.numel() as u64);
                2 * out * per_out
            }
            Op::Attention { views, .. } => {
                // q·kᵀ and p·v: 2·Lq·Lk·(D + Dv) per batch entry
                let ops = [arg(0), arg(1), arg(2)].map(|t| t.shape.as_slice());
                let [q, kt, vv] = super::AttnViews::logical(views.as_deref(), ops);
                let r = q.len();
                let rows = (q.iter().product::<usize>() / q[r - 1].max(1)) as u64;
                2 * rows * kt[r - 1] as u64 * (q[r - 1] + vv[r - 1]) as u64
            }
            // Whole channel blocks: the output counts M·OH·OW per image.
            Op::ConvBlocked { window, .. } => {
                let taps: u64 = window.kernel.iter().map(|&k| k as u64).product();
                2 * out * arg(1).shape[1] as u64 * taps
            }
            Op::Pool { window, .. } => {
                out * window.kernel.iter().map(|&k| k as u64).product::<u64>()
            }
            Op::Unary(_) | Op::Binary(_) | Op::Where => out,
            Op::Softmax { .. } | Op::LayerNorm { .. } | Op::InstanceNorm { .. } => 5 * out,
            Op::Reduce { .. } | Op::ArgMax { .. } => arg(0).numel() as u64,
            _ => 0,
        };
    }
    total
}
