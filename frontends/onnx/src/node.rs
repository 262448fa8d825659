//! One ONNX node as the op builders see it: its display name, the opset in
//! force, and typed attribute getters whose errors name the node.

use crate::error::{esc, Error};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

/// Window attributes (pads, strides, ...) above this are refused, which keeps
/// the IR's size arithmetic far from overflow.
pub(crate) const MAX_ATTR_DIM: i64 = i32::MAX as i64;

pub(crate) struct Node<'a> {
    pub p: &'a NodeProto,
    /// `name`, or `#<index>` for unnamed nodes.
    pub name: String,
    pub op: &'a str,
    /// Default-domain opset version of the model.
    pub opset: i64,
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

impl<'a> Node<'a> {
    pub fn new(p: &'a NodeProto, index: usize, opset: i64) -> Self {
        Node {
            p,
            name: display_name(p, index),
            op: &p.op_type,
            opset,
        }
    }

    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::Node {
            node: self.name.clone(),
            op: self.op.to_string(),
            msg: msg.into(),
        }
    }

    /// `name (OpType)`, recorded as the origin of every IR value (escaped:
    /// it ends up in one-line messages and IR dumps).
    pub fn origin(&self) -> String {
        format!("{} ({})", esc(&self.name), esc(self.op))
    }

    /// Name of output `i`, or "" when absent.
    pub fn output_name(&self, i: usize) -> &str {
        self.p.output.get(i).map_or("", |s| s.as_str())
    }

    /// Name of input `i`, or "" when absent.
    pub fn input_name(&self, i: usize) -> &str {
        self.p.input.get(i).map_or("", |s| s.as_str())
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.p.attribute.iter().any(|a| a.name == name)
    }

    fn attr(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>> {
        let Some(a) = self.p.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        if !a.ref_attr_name.is_empty() {
            return Err(self.err(format!(
                "attribute '{name}' refers to a function attribute, which nnc does not support"
            )));
        }
        match a.type_.enum_value() {
            Ok(t) if t == want => Ok(Some(a)),
            got => Err(self.err(format!(
                "attribute '{name}' must be {}, got {}",
                type_name(Ok(want)),
                type_name(got)
            ))),
        }
    }

    pub fn attr_int_opt(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.attr(name, AttributeType::INT)?.map(|a| a.i))
    }

    pub fn attr_int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.attr_int_opt(name)?.unwrap_or(default))
    }

    /// An int attribute that must be 0 or 1.
    pub fn attr_bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.attr_int_opt(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.err(format!("attribute '{name}' = {v} must be 0 or 1"))),
        }
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<&'a [i64]>> {
        Ok(self
            .attr(name, AttributeType::INTS)?
            .map(|a| a.ints.as_slice()))
    }

    /// An ints attribute of sizes: each in `0..=MAX_ATTR_DIM`.
    pub fn attr_dims(&self, name: &str) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.attr_ints(name)? else {
            return Ok(None);
        };
        if let Some(bad) = v.iter().find(|&&x| !(0..=MAX_ATTR_DIM).contains(&x)) {
            return Err(self.err(format!(
                "attribute '{name}' = {v:?}: value {bad} is out of range"
            )));
        }
        Ok(Some(v.iter().map(|&x| x as usize).collect()))
    }

    pub fn attr_float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .attr(name, AttributeType::FLOAT)?
            .map_or(default, |a| a.f))
    }

    pub fn attr_float_opt(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.attr(name, AttributeType::FLOAT)?.map(|a| a.f))
    }

    pub fn attr_floats(&self, name: &str) -> Result<Option<&'a [f32]>> {
        Ok(self
            .attr(name, AttributeType::FLOATS)?
            .map(|a| a.floats.as_slice()))
    }

    pub fn attr_string(&self, name: &str, default: &str) -> Result<String> {
        match self.attr(name, AttributeType::STRING)? {
            None => Ok(default.to_string()),
            Some(a) => String::from_utf8(a.s.clone())
                .map_err(|_| self.err(format!("attribute '{name}' is not valid UTF-8"))),
        }
    }

    pub fn attr_tensor(&self, name: &str) -> Result<Option<&'a TensorProto>> {
        match self.attr(name, AttributeType::TENSOR)? {
            None => Ok(None),
            Some(a) => match a.t.as_ref() {
                Some(t) => Ok(Some(t)),
                None => Err(self.err(format!("attribute '{name}' has no tensor"))),
            },
        }
    }

    /// Error for an attribute value nnc does not implement.
    pub fn unsupported_attr(&self, name: &str, value: impl std::fmt::Display) -> Error {
        self.err(format!("attribute '{name}' = {value} is not supported"))
    }

    /// Normalizes a possibly negative axis into `0..rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let r = rank as i64;
        if axis < -r || axis >= r {
            return Err(self.err(format!("axis {axis} is out of range for rank {rank}")));
        }
        Ok(if axis < 0 {
            (axis + r) as usize
        } else {
            axis as usize
        })
    }

    /// Normalizes a list of axes, refusing duplicates.
    pub fn axes(&self, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let a = self.axis(a, rank)?;
            if out.contains(&a) {
                return Err(self.err(format!("axes {axes:?} repeat axis {a}")));
            }
            out.push(a);
        }
        Ok(out)
    }
}

fn display_name(p: &NodeProto, index: usize) -> String {
    if p.name.is_empty() {
        format!("#{index}")
    } else {
        p.name.clone()
    }
}

fn type_name(t: std::result::Result<AttributeType, i32>) -> String {
    use AttributeType::*;
    match t {
        Ok(UNDEFINED) => "untyped".into(),
        Ok(FLOAT) => "a float".into(),
        Ok(INT) => "an int".into(),
        Ok(STRING) => "a string".into(),
        Ok(TENSOR) => "a tensor".into(),
        Ok(GRAPH) => "a graph".into(),
        Ok(SPARSE_TENSOR) => "a sparse tensor".into(),
        Ok(TYPE_PROTO) => "a type".into(),
        Ok(FLOATS) => "floats".into(),
        Ok(INTS) => "ints".into(),
        Ok(STRINGS) => "strings".into(),
        Ok(TENSORS) => "tensors".into(),
        Ok(GRAPHS) => "graphs".into(),
        Ok(SPARSE_TENSORS) => "sparse tensors".into(),
        Ok(TYPE_PROTOS) => "types".into(),
        Err(code) => format!("unknown attribute type {code}"),
    }
}
