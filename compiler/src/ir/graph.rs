//! The tensor graph: an SSA list of values in topological order.

use super::op::Op;
use super::tensor::{Tensor, TensorType};
use std::fmt;
use std::sync::Arc;

/// Index of a value in [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// How a value comes to be.
#[derive(Clone, Debug)]
pub enum ValueKind {
    /// The `i`-th graph input.
    Input(usize),
    /// Compile-time constant (weights and folded values).
    Const(Arc<Tensor>),
    /// Result of an op applied to earlier values.
    Op { op: Op, args: Vec<ValueId> },
}

#[derive(Clone, Debug)]
pub struct Value {
    /// The ONNX value name (for messages, dumps and the ABI).
    pub name: String,
    pub ty: TensorType,
    pub kind: ValueKind,
    /// The ONNX node this value came from (`name (OpType)`), for error messages.
    pub origin: Option<String>,
}

/// A named graph output.
#[derive(Clone, Debug)]
pub struct Output {
    pub name: String,
    pub value: ValueId,
}

/// A whole model: inputs, values in topological order, outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub values: Vec<Value>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<Output>,
}

/// Why a node could not be added: carries the op name and the reason so the
/// frontend can prefix the ONNX node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrError(pub String);

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IrError {}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.values[id.index()].ty
    }

    pub fn ids(&self) -> impl Iterator<Item = ValueId> {
        (0..self.values.len() as u32).map(ValueId)
    }

    fn push(&mut self, v: Value) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(v);
        id
    }

    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let idx = self.inputs.len();
        let id = self.push(Value {
            name: name.into(),
            ty,
            kind: ValueKind::Input(idx),
            origin: None,
        });
        self.inputs.push(id);
        id
    }

    pub fn add_const(&mut self, name: impl Into<String>, t: impl Into<Arc<Tensor>>) -> ValueId {
        let t = t.into();
        self.push(Value {
            name: name.into(),
            ty: t.ty(),
            kind: ValueKind::Const(t),
            origin: None,
        })
    }

    /// Adds `op(args)`, inferring its type.
    pub fn add_op(
        &mut self,
        name: impl Into<String>,
        op: Op,
        args: &[ValueId],
    ) -> Result<ValueId, IrError> {
        let tys: Vec<&TensorType> = args.iter().map(|&a| self.ty(a)).collect();
        let ty = op
            .infer(&tys)
            .map_err(|e| IrError(format!("{}: {e}", op.name())))?;
        if ty.checked_bytes().is_none() {
            return Err(IrError(format!(
                "{}: result type {ty} is too large",
                op.name()
            )));
        }
        Ok(self.push(Value {
            name: name.into(),
            ty,
            kind: ValueKind::Op {
                op,
                args: args.to_vec(),
            },
            origin: None,
        }))
    }

    pub fn set_origin(&mut self, id: ValueId, origin: impl Into<String>) {
        self.values[id.index()].origin = Some(origin.into());
    }

    pub fn add_output(&mut self, name: impl Into<String>, value: ValueId) {
        self.outputs.push(Output {
            name: name.into(),
            value,
        });
    }

    pub fn as_const(&self, id: ValueId) -> Option<&Arc<Tensor>> {
        match &self.value(id).kind {
            ValueKind::Const(t) => Some(t),
            _ => None,
        }
    }

    /// Number of uses of each value (graph outputs count as uses).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut n = vec![0; self.values.len()];
        for v in &self.values {
            if let ValueKind::Op { args, .. } = &v.kind {
                for a in args {
                    n[a.index()] += 1;
                }
            }
        }
        for o in &self.outputs {
            n[o.value.index()] += 1;
        }
        n
    }

    /// Drops values that no output depends on and renumbers the rest,
    /// keeping the order (and so the topological property).
    pub fn remove_dead(&mut self) {
        let mut live = vec![false; self.values.len()];
        for o in &self.outputs {
            live[o.value.index()] = true;
        }
        for &i in &self.inputs {
            live[i.index()] = true; // inputs are part of the ABI even if unused
        }
        for i in (0..self.values.len()).rev() {
            if live[i] {
                if let ValueKind::Op { args, .. } = &self.values[i].kind {
                    for a in args {
                        live[a.index()] = true;
                    }
                }
            }
        }
        let mut remap = vec![u32::MAX; self.values.len()];
        let mut kept = Vec::new();
        for (i, v) in std::mem::take(&mut self.values).into_iter().enumerate() {
            if live[i] {
                remap[i] = kept.len() as u32;
                kept.push(v);
            }
        }
        for v in &mut kept {
            if let ValueKind::Op { args, .. } = &mut v.kind {
                for a in args {
                    *a = ValueId(remap[a.index()]);
                }
            }
        }
        self.values = kept;
        for i in &mut self.inputs {
            *i = ValueId(remap[i.index()]);
        }
        for o in &mut self.outputs {
            o.value = ValueId(remap[o.value.index()]);
        }
    }

    /// Checks the structural invariants every stage relies on: operands
    /// precede users, input indices are consistent, and every op's recorded
    /// type is what inference gives.
    pub fn verify(&self) -> Result<(), IrError> {
        for (i, v) in self.values.iter().enumerate() {
            let here = format!("value %{i} ({})", v.name);
            match &v.kind {
                ValueKind::Input(k) => {
                    if self.inputs.get(*k) != Some(&ValueId(i as u32)) {
                        return Err(IrError(format!(
                            "{here}: input index {k} does not match the input list"
                        )));
                    }
                }
                ValueKind::Const(t) => {
                    if t.ty() != v.ty {
                        return Err(IrError(format!(
                            "{here}: constant type {} differs from value type {}",
                            t.ty(),
                            v.ty
                        )));
                    }
                }
                ValueKind::Op { op, args } => {
                    for a in args {
                        if a.index() >= i {
                            return Err(IrError(format!(
                                "{here}: operand {a} is not defined before its use"
                            )));
                        }
                    }
                    let tys: Vec<&TensorType> = args.iter().map(|&a| self.ty(a)).collect();
                    let ty = op
                        .infer(&tys)
                        .map_err(|e| IrError(format!("{here}: {e}")))?;
                    if ty != v.ty {
                        return Err(IrError(format!(
                            "{here}: recorded type {} but {} infers {ty}",
                            v.ty,
                            op.name()
                        )));
                    }
                }
            }
        }
        for o in &self.outputs {
            if o.value.index() >= self.values.len() {
                return Err(IrError(format!(
                    "output {} refers to a missing value",
                    o.name
                )));
            }
        }
        Ok(())
    }
}
