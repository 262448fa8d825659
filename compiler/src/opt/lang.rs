//! The e-graph language over nnc's IR and its analysis.
//!
//! An op e-node is `(name attr arg…)`: its first child is the e-class of an
//! `Attr` leaf holding the IR `Op` (with all attributes), so patterns can
//! match op kinds by name and bind attributes to variables (`?a`) that
//! conditions then inspect. Constants and graph inputs are leaves indexing
//! side tables. The analysis carries each class's type and, when known at
//! compile time, its value — so rules can be conditional on shapes and
//! constant-ness, and constant subgraphs fold during saturation.

use crate::ir::{eval, Op, Tensor, TensorType};
use egg::{Analysis, DidMerge, EGraph, FromOp, Id, Language};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Constants larger than this are not produced by folding inside the
/// e-graph (weights are folded anyway by the frontend; this bounds memory
/// when rules create many candidate variants).
const FOLD_LIMIT_ELEMS: usize = 1 << 24;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Nnc {
    /// Graph input `i`.
    Input(u32),
    /// Constant `i` of the analysis' table.
    Const(u32),
    /// Attribute leaf: op `i` of the analysis' table.
    Attr(u32),
    /// An op application; `children[0]` is the attribute class.
    Op(&'static str, Vec<Id>),
}

impl Language for Nnc {
    type Discriminant = (u8, &'static str, u32, usize);

    fn discriminant(&self) -> Self::Discriminant {
        match self {
            Nnc::Input(i) => (0, "", *i, 0),
            Nnc::Const(i) => (1, "", *i, 0),
            Nnc::Attr(i) => (2, "", *i, 0),
            Nnc::Op(n, c) => (3, n, 0, c.len()),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
    }

    fn children(&self) -> &[Id] {
        match self {
            Nnc::Op(_, c) => c,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Nnc::Op(_, c) => c,
            _ => &mut [],
        }
    }
}

impl fmt::Display for Nnc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nnc::Input(i) => write!(f, "input{i}"),
            Nnc::Const(i) => write!(f, "const{i}"),
            Nnc::Attr(i) => write!(f, "attr{i}"),
            Nnc::Op(n, _) => f.write_str(n),
        }
    }
}

/// Op names usable in patterns (every IR op name).
pub const OP_NAMES: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "sqrt",
    "erf",
    "neg",
    "abs",
    "reciprocal",
    "floor",
    "ceil",
    "gelu",
    "silu",
    "leaky_relu",
    "elu",
    "selu",
    "hard_sigmoid",
    "hard_swish",
    "clip",
    "not",
    "round",
    "sign",
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "max",
    "min",
    "mod",
    "fmod",
    "equal",
    "less",
    "greater",
    "less_or_equal",
    "greater_or_equal",
    "and",
    "or",
    "xor",
    "where",
    "cast",
    "matmul",
    "gemm",
    "conv",
    "conv_impl",
    "tiled",
    "to_blocked",
    "from_blocked",
    "conv_blocked",
    "max_pool",
    "avg_pool",
    "softmax",
    "log_softmax",
    "layer_norm",
    "instance_norm",
    "reduce",
    "argmax",
    "reshape",
    "transpose",
    "concat",
    "slice",
    "gather",
    "gather_elements",
    "expand",
    "tile",
    "pad",
    "attention",
    "fused",
];

/// Interns an op name (IR names are `&'static str` already).
pub fn op_name(name: &str) -> Option<&'static str> {
    OP_NAMES.iter().copied().find(|&n| n == name)
}

impl FromOp for Nnc {
    type Error = String;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, String> {
        match op_name(op) {
            Some(n) if !children.is_empty() => Ok(Nnc::Op(n, children)),
            _ => Err(format!(
                "unknown op '{op}' in a pattern (or missing attribute child)"
            )),
        }
    }
}

/// What the analysis knows of an e-class.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// None for attribute classes.
    pub ty: Option<TensorType>,
    /// The value, when known at compile time.
    pub value: Option<Arc<Tensor>>,
}

/// Side tables and the analysis itself.
#[derive(Default)]
pub struct Tables {
    pub inputs: Vec<TensorType>,
    pub consts: Vec<Arc<Tensor>>,
    pub attrs: Vec<Op>,
    pub attr_ids: HashMap<Op, u32>,
    /// Constants interned by value, so a rule that rebuilds the same
    /// constant adds no new e-node (and saturation can finish).
    pub const_ids: HashMap<(Vec<usize>, u64), Vec<u32>>,
    /// Target L2 size (from the cost model's machine), for tiling rules.
    pub l2_bytes: usize,
    /// The target has Winograd conv kernels (see `Machine::winograd`).
    pub winograd: bool,
    /// The target has the channel-blocked direct conv (`Machine::blocked_conv`).
    pub blocked_conv: bool,
    /// Direct conv geometries already tried: whether their kernels assemble.
    pub blocked_ok: HashMap<String, bool>,
    /// The target's assembled GEMM level (see `Machine::asm_gemm`).
    pub asm_gemm: Option<crate::codegen::x86::Level>,
    /// (rule, canonical match) pairs already applied.
    pub applied: std::collections::HashSet<(String, Vec<Id>)>,
}

impl Tables {
    pub fn attr(&mut self, op: &Op) -> u32 {
        if let Some(&i) = self.attr_ids.get(op) {
            return i;
        }
        let i = self.attrs.len() as u32;
        self.attrs.push(op.clone());
        self.attr_ids.insert(op.clone(), i);
        i
    }

    pub fn konst(&mut self, t: Arc<Tensor>) -> u32 {
        let key = (t.shape.clone(), content_hash(&t));
        if let Some(cands) = self.const_ids.get(&key) {
            if let Some(&i) = cands
                .iter()
                .find(|&&i| same_bits(&self.consts[i as usize], &t))
            {
                return i;
            }
        }
        self.consts.push(t);
        let i = (self.consts.len() - 1) as u32;
        self.const_ids.entry(key).or_default().push(i);
        i
    }
}

/// FNV-style hash of a tensor's dtype and element bits (no allocation).
fn content_hash(t: &Tensor) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ t.dtype().onnx_code() as u64;
    let mut mix = |x: u64| h = (h ^ x).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    match &t.data {
        crate::ir::TensorData::F32(v) => v.iter().for_each(|x| mix(x.to_bits() as u64)),
        crate::ir::TensorData::I64(v) => v.iter().for_each(|&x| mix(x as u64)),
        crate::ir::TensorData::Bool(v) => v.iter().for_each(|&x| mix(x as u64)),
    }
    h
}

/// Bitwise equality (so 0.0 and -0.0, or two NaNs, are told apart correctly).
fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    use crate::ir::TensorData::*;
    a.shape == b.shape
        && match (&a.data, &b.data) {
            (F32(x), F32(y)) => x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            (I64(x), I64(y)) => x == y,
            (Bool(x), Bool(y)) => x == y,
            _ => false,
        }
}

pub type EG = EGraph<Nnc, Tables>;

/// The op held by an attribute class.
pub fn attr_of(eg: &EG, id: Id) -> Option<&Op> {
    eg[id].nodes.iter().find_map(|n| match n {
        Nnc::Attr(i) => Some(&eg.analysis.attrs[*i as usize]),
        _ => None,
    })
}

/// Adds `op(args)` (interning its attribute) and returns the class.
pub fn add_op(eg: &mut EG, op: &Op, args: &[Id]) -> Id {
    let a = eg.analysis.attr(op);
    let attr = eg.add(Nnc::Attr(a));
    let mut ch = Vec::with_capacity(args.len() + 1);
    ch.push(attr);
    ch.extend_from_slice(args);
    eg.add(Nnc::Op(op.name(), ch))
}

pub fn add_const(eg: &mut EG, t: Tensor) -> Id {
    let i = eg.analysis.konst(Arc::new(t));
    eg.add(Nnc::Const(i))
}

impl Analysis<Nnc> for Tables {
    type Data = Facts;

    fn make(eg: &mut EG, enode: &Nnc, _id: Id) -> Facts {
        match enode {
            Nnc::Input(i) => Facts {
                ty: Some(eg.analysis.inputs[*i as usize].clone()),
                value: None,
            },
            Nnc::Const(i) => {
                let t = eg.analysis.consts[*i as usize].clone();
                Facts {
                    ty: Some(t.ty()),
                    value: Some(t),
                }
            }
            Nnc::Attr(_) => Facts::default(),
            Nnc::Op(_, ch) => {
                let Some(op) = attr_of(eg, ch[0]).cloned() else {
                    return Facts::default();
                };
                let tys: Option<Vec<TensorType>> =
                    ch[1..].iter().map(|&c| eg[c].data.ty.clone()).collect();
                let Some(tys) = tys else {
                    return Facts::default();
                };
                let refs: Vec<&TensorType> = tys.iter().collect();
                let Ok(ty) = op.infer(&refs) else {
                    return Facts::default();
                };
                let vals: Option<Vec<Arc<Tensor>>> =
                    ch[1..].iter().map(|&c| eg[c].data.value.clone()).collect();
                let value = match vals {
                    Some(v) if ty.numel() <= FOLD_LIMIT_ELEMS => {
                        let r: Vec<&Tensor> = v.iter().map(|t| t.as_ref()).collect();
                        eval::eval_op(&op, &r).ok().map(Arc::new)
                    }
                    _ => None,
                };
                Facts {
                    ty: Some(ty),
                    value,
                }
            }
        }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        let mut changed_a = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        if a.value.is_none() && b.value.is_some() {
            a.value = b.value.clone();
            changed_a = true;
        }
        DidMerge(changed_a, a.value.is_some() && b.value.is_none())
    }

    fn modify(eg: &mut EG, id: Id) {
        // A class with a known value gets a constant leaf, so extraction can
        // pick it (and drop the computation).
        if let Some(v) = eg[id].data.value.clone() {
            if !eg[id].nodes.iter().any(|n| matches!(n, Nnc::Const(_))) {
                let c = add_const(eg, (*v).clone());
                eg.union(id, c);
            }
        }
    }
}
