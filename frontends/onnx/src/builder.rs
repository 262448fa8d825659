//! Graph construction state shared by the op builders: the ONNX name → IR
//! value map, node-aware input access, and constant folding.

use crate::error::esc;
use crate::node::{Node, Result};
use nnc_compiler::ir::{
    eval, BinaryOp, DType, Graph, Op, Tensor, TensorData, TensorType, ValueId, ValueKind,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Results up to this size are always folded.
pub(crate) const FOLD_FREE_BYTES: usize = 1 << 20;
/// Larger results are folded only if they are not much bigger than the
/// operands (folding weights is good; materializing a huge Expand is not)...
const FOLD_GROWTH: usize = 2;
/// ...and never beyond this.
pub(crate) const FOLD_MAX_BYTES: usize = 256 << 20;

pub(crate) struct Ctx<'a> {
    pub g: Graph,
    vals: HashMap<String, ValueId>,
    /// Where tensors stored as external data may be read from.
    pub base_dir: Option<&'a Path>,
}

impl<'a> Ctx<'a> {
    pub fn new(name: &str, base_dir: Option<&'a Path>) -> Self {
        Ctx {
            g: Graph::new(name),
            vals: HashMap::new(),
            base_dir,
        }
    }

    /// Binds an ONNX value name.
    pub fn define(&mut self, name: &str, id: ValueId) {
        self.vals.insert(name.to_string(), id);
    }

    pub fn lookup(&self, name: &str) -> Option<ValueId> {
        self.vals.get(name).copied()
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        self.g.ty(id)
    }

    pub fn shape(&self, id: ValueId) -> Vec<usize> {
        self.g.ty(id).shape.clone()
    }

    pub fn as_const(&self, id: ValueId) -> Option<Arc<Tensor>> {
        self.g.as_const(id).cloned()
    }

    /// Input `i` if present (ONNX marks skipped optional inputs with "").
    pub fn opt_input(&self, n: &Node, i: usize) -> Result<Option<ValueId>> {
        let name = n.input_name(i);
        if name.is_empty() {
            return Ok(None);
        }
        self.lookup(name)
            .map(Some)
            .ok_or_else(|| n.err(format!("input {name:?} is not defined")))
    }

    pub fn input(&self, n: &Node, i: usize) -> Result<ValueId> {
        self.opt_input(n, i)?
            .ok_or_else(|| n.err(format!("required input {i} is missing")))
    }

    /// Number of inputs, counting skipped ones up to the last present one.
    pub fn num_inputs(&self, n: &Node) -> usize {
        n.p.input
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1)
    }

    /// Value-dependent inputs (shapes, axes, sizes) must be known at compile
    /// time, since the IR is statically shaped.
    pub fn const_input(&self, n: &Node, i: usize, what: &str) -> Result<Option<Arc<Tensor>>> {
        let Some(id) = self.opt_input(n, i)? else {
            return Ok(None);
        };
        match self.as_const(id) {
            Some(t) => Ok(Some(t)),
            None => Err(self.not_constant(n, id, what)),
        }
    }

    /// The refusal for a value-dependent operand that is not a compile-time
    /// constant; names the graph inputs it comes from so users can bind them
    /// (`--bind-input`, which the conformance harness also parses).
    pub fn not_constant(&self, n: &Node, id: ValueId, what: &str) -> crate::error::Error {
        let sources = self.input_sources(id);
        let hint = if sources.is_empty() {
            "nnc needs it at compile time".to_string()
        } else {
            let names: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
            let flags: Vec<String> = sources
                .iter()
                .map(|s| format!("--bind-input {}=FILE.npy", esc(s)))
                .collect();
            let noun = if sources.len() == 1 {
                "input"
            } else {
                "inputs"
            };
            format!(
                "nnc needs it at compile time; it depends on graph {noun} {}: bind with {}",
                names.join(", "),
                flags.join(" ")
            )
        };
        n.err(format!(
            "input '{what}' is computed at run time: not supported ({hint})"
        ))
    }

    /// Names of the graph inputs `id` depends on, in input order.
    fn input_sources(&self, id: ValueId) -> Vec<String> {
        let mut seen = vec![false; self.g.values.len()];
        let mut stack = vec![id];
        let mut inputs = Vec::new();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v.index()], true) {
                continue;
            }
            match &self.g.value(v).kind {
                ValueKind::Input(k) => inputs.push(*k),
                ValueKind::Op { args, .. } => stack.extend(args.iter().copied()),
                ValueKind::Const(_) => {}
            }
        }
        inputs.sort_unstable();
        inputs
            .into_iter()
            .map(|k| self.g.value(self.g.inputs[k]).name.clone())
            .collect()
    }

    /// A constant integer input as a flat list.
    pub fn const_ints(&self, n: &Node, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        let Some(t) = self.const_input(n, i, what)? else {
            return Ok(None);
        };
        t.to_i64_vec().map(Some).ok_or_else(|| {
            n.err(format!(
                "input '{what}' must be an integer tensor, got {}",
                t.dtype()
            ))
        })
    }

    /// A constant scalar (or one-element) input as f64, whatever its dtype.
    pub fn const_scalar(&self, n: &Node, i: usize, what: &str) -> Result<Option<f64>> {
        let Some(t) = self.const_input(n, i, what)? else {
            return Ok(None);
        };
        if t.numel() != 1 {
            return Err(n.err(format!(
                "input '{what}' must have one element, has shape {:?}",
                t.shape
            )));
        }
        Ok(Some(match &t.data {
            TensorData::F32(v) => v[0] as f64,
            TensorData::I64(v) => v[0] as f64,
            TensorData::Bool(v) => v[0] as u8 as f64,
        }))
    }

    /// Adds `op(args)` for node `n`, folding it if every argument is constant.
    pub fn op(&mut self, n: &Node, op: Op, args: &[ValueId]) -> Result<ValueId> {
        let name = format!("{}/{}", n.output_name(0), op.name());
        let id = self
            .g
            .add_op(name, op, args)
            .map_err(|e| n.err(dedupe_prefix(e.0)))?;
        self.g.set_origin(id, n.origin());
        self.try_fold(id);
        Ok(id)
    }

    pub fn binary(&mut self, n: &Node, b: BinaryOp, x: ValueId, y: ValueId) -> Result<ValueId> {
        self.op(n, Op::Binary(b), &[x, y])
    }

    /// Reshape, skipped when the shape already matches.
    pub fn reshape(&mut self, n: &Node, x: ValueId, shape: Vec<usize>) -> Result<ValueId> {
        if self.ty(x).shape == shape {
            return Ok(x);
        }
        self.op(n, Op::Reshape { shape }, &[x])
    }

    pub fn constant(&mut self, n: &Node, t: Tensor) -> ValueId {
        let id = self.g.add_const(format!("{}/const", n.output_name(0)), t);
        self.g.set_origin(id, n.origin());
        id
    }

    /// A scalar constant of `dtype` holding `v`.
    pub fn scalar(&mut self, n: &Node, dtype: DType, v: f64) -> ValueId {
        let data = match dtype {
            DType::F32 => TensorData::F32(vec![v as f32]),
            DType::I64 => TensorData::I64(vec![v as i64]),
            DType::Bool => TensorData::Bool(vec![v != 0.0]),
        };
        self.constant(
            n,
            Tensor {
                shape: vec![],
                data,
            },
        )
    }

    /// Replaces an op with all-constant operands by its value. The evaluator
    /// may not cover every op; then the op simply stays.
    fn try_fold(&mut self, id: ValueId) {
        let ValueKind::Op { op, args } = &self.g.value(id).kind else {
            return;
        };
        let Some(consts) = args
            .iter()
            .map(|&a| self.g.as_const(a).cloned())
            .collect::<Option<Vec<_>>>()
        else {
            return;
        };
        let ty = self.g.ty(id);
        let out_bytes = ty.bytes();
        let in_bytes: usize = consts.iter().map(|t| t.ty().bytes()).sum();
        if out_bytes > FOLD_MAX_BYTES
            || (out_bytes > FOLD_FREE_BYTES && out_bytes > FOLD_GROWTH * in_bytes)
        {
            return;
        }
        let refs: Vec<&Tensor> = consts.iter().map(|t| &**t).collect();
        if let Ok(t) = eval::eval_op(op, &refs) {
            if t.ty() == *ty {
                self.g.values[id.index()].kind = ValueKind::Const(Arc::new(t));
            }
        }
    }
}

/// `add_op` prefixes the op name, which some inference messages already
/// start with ("xor: xor: ..."); keep one.
fn dedupe_prefix(msg: String) -> String {
    match msg.split_once(": ") {
        Some((head, rest)) if rest.starts_with(head) && rest[head.len()..].starts_with(": ") => {
            rest.to_string()
        }
        _ => msg,
    }
}
