//! Optimizer fusions through codegen: a graph is optimized (so epilogue and
//! elementwise fusion happen), JIT-compiled and compared with the reference
//! evaluator on the unoptimized graph.

use nnc_compiler::ir::{eval, BinaryOp, DType, Graph, Op, Tensor, TensorType, UnaryOp};
use nnc_compiler::jit::JitModel;
use nnc_compiler::opt::{self, cost::Machine, Limits};
use nnc_compiler::pipeline;

fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|j| ((j * 7919 + seed * 104729) % 997) as f32 / 300.0 - 1.6)
        .collect()
}

/// Optimizes, checks that `want` ops appear, runs the JIT and compares;
/// returns the optimized graph's text.
fn run(g: Graph, want: &[&str]) -> String {
    let (og, _) = opt::optimize(&g, &Machine::x86_64_sse(), &Limits::default());
    let text = nnc_compiler::ir::text::print(&og);
    for w in want {
        assert!(text.contains(w), "expected {w} in:\n{text}");
    }
    let (pg, plan) = pipeline::prepare(og).unwrap();
    let model = JitModel::compile(&pg, &plan).unwrap();
    let ins: Vec<Tensor> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let t = g.ty(i);
            Tensor::f32(t.shape.clone(), data(t.numel(), k)).unwrap()
        })
        .collect();
    let want_out = eval::eval_graph(&g, &ins).unwrap();
    let mut outs: Vec<Vec<f32>> = want_out.iter().map(|t| vec![f32::NAN; t.numel()]).collect();
    let in_slices: Vec<&[f32]> = ins.iter().map(|t| t.as_f32().unwrap()).collect();
    let mut out_slices: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    assert_eq!(model.run_f32(&in_slices, &mut out_slices), 0);
    for (w, got) in want_out.iter().zip(&outs) {
        for (p, q) in w.as_f32().unwrap().iter().zip(got) {
            assert!(
                (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                "{p} vs {q}\n{text}"
            );
        }
    }
    text
}

fn f32t(s: &[usize]) -> TensorType {
    TensorType::new(DType::F32, s.to_vec())
}

fn konst(g: &mut Graph, shape: &[usize], seed: usize) -> nnc_compiler::ir::ValueId {
    let n = shape.iter().product();
    g.add_const(
        format!("k{seed}"),
        Tensor::f32(shape.to_vec(), data(n, seed + 10)).unwrap(),
    )
}

fn gemm(relu: bool, beta: f32) -> Op {
    gemm_ab(relu, 1.0, beta)
}

fn gemm_ab(relu: bool, alpha: f32, beta: f32) -> Op {
    Op::Gemm {
        alpha: alpha.into(),
        beta: beta.into(),
        trans_a: false,
        trans_b: false,
        relu,
    }
}

#[test]
fn gemm_bias_residual_relu_runs() {
    // relu(gemm(x, W, b) + r) with constant and run-time B, sizes with tails
    for (m, k, n, alpha) in [(5, 7, 9, 1.0), (33, 64, 40, 1.0), (33, 300, 40, 2.0)] {
        for const_w in [true, false] {
            let mut g = Graph::new("t");
            let x = g.add_input("x", f32t(&[m, k]));
            let r = g.add_input("r", f32t(&[m, n]));
            let w = if const_w {
                konst(&mut g, &[k, n], 1)
            } else {
                g.add_input("w", f32t(&[k, n]))
            };
            let b = konst(&mut g, &[n], 2);
            let y = g
                .add_op("y", gemm_ab(false, alpha, 0.5), &[x, w, b])
                .unwrap();
            let s = g.add_op("s", Op::Binary(BinaryOp::Add), &[y, r]).unwrap();
            let o = g.add_op("o", Op::Unary(UnaryOp::Relu), &[s]).unwrap();
            g.add_output("o", o);
            let t = run(g, &["gemm(", "relu=true"]);
            assert!(!t.contains("= add(") && !t.contains("fused("), "{t}");
        }
    }
}

#[test]
fn gemm_broadcast_residual_runs() {
    // gemm(x, W) + r[1, N]: the residual becomes C with row stride 0
    let mut g = Graph::new("t");
    let x = g.add_input("x", f32t(&[6, 5]));
    let r = g.add_input("r", f32t(&[1, 7]));
    let w = konst(&mut g, &[5, 7], 3);
    let y = g.add_op("y", gemm(false, 0.0), &[x, w]).unwrap();
    let s = g.add_op("s", Op::Binary(BinaryOp::Add), &[r, y]).unwrap();
    g.add_output("s", s);
    let t = run(g, &["gemm("]);
    assert!(!t.contains("= add("), "{t}");
}

#[test]
fn fused_chains_run() {
    // relu(x·y + z)·0.5 − sigmoid(x) with z broadcast [N]; outputs also an inner value
    let mut g = Graph::new("t");
    let x = g.add_input("x", f32t(&[3, 37]));
    let y = g.add_input("y", f32t(&[3, 37]));
    let z = g.add_input("z", f32t(&[37]));
    let half = g.add_const("h", Tensor::scalar_f32(0.5));
    let m = g.add_op("m", Op::Binary(BinaryOp::Mul), &[x, y]).unwrap();
    let a = g.add_op("a", Op::Binary(BinaryOp::Add), &[m, z]).unwrap();
    let r = g.add_op("r", Op::Unary(UnaryOp::Relu), &[a]).unwrap();
    let h = g
        .add_op("h2", Op::Binary(BinaryOp::Mul), &[r, half])
        .unwrap();
    let s = g.add_op("s", Op::Unary(UnaryOp::Sigmoid), &[x]).unwrap();
    let d = g.add_op("d", Op::Binary(BinaryOp::Sub), &[h, s]).unwrap();
    let e = g.add_op("e", Op::Unary(UnaryOp::Exp), &[d]).unwrap();
    g.add_output("d", d);
    g.add_output("e", e);
    let _ = run(g, &["fused("]);
}

#[test]
fn conv_residual_relu_runs() {
    // relu(conv(x, w, b) + r) for im2col (whole and chunked), pointwise and grouped convs
    use nnc_compiler::ir::Window;
    for (k, pad, group, chunked) in [
        (3, 1, 1, false),
        (3, 1, 1, true),
        (1, 0, 1, false),
        (3, 1, 2, false),
    ] {
        let (n, c, h, m) = (2, 4, 8, 6);
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32t(&[n, c, h, h]));
        let r = g.add_input("r", f32t(&[n, m, h, h]));
        let w = konst(&mut g, &[m, c / group, k, k], 4);
        let b = konst(&mut g, &[m], 5);
        let win = Window {
            kernel: vec![k, k],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![pad; 4],
            ceil_mode: false,
        };
        let y = g
            .add_op(
                "y",
                Op::ConvImpl {
                    window: win,
                    group,
                    algo: if k == 1 {
                        nnc_compiler::ir::ConvAlgo::Pointwise
                    } else {
                        nnc_compiler::ir::ConvAlgo::Im2col {
                            chunk_rows: if chunked { 2 } else { h },
                        }
                    },
                    relu: false,
                    pool: None,
                },
                &[x, w, b],
            )
            .unwrap();
        let s = g.add_op("s", Op::Binary(BinaryOp::Add), &[r, y]).unwrap();
        let o = g.add_op("o", Op::Unary(UnaryOp::Relu), &[s]).unwrap();
        g.add_output("o", o);
        let t = run(g, &["relu=true"]);
        assert!(!t.contains("= add(") && !t.contains("fused("), "{t}");
    }
}
