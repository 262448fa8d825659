//! A tiny ONNX model builder for tests, on onnx-protobuf's generated structs.
#![allow(dead_code)]

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;

pub struct M {
    pub model: ModelProto,
}

/// A dim given as a number ("64") or a symbol ("batch"); "?" is unknown.
fn dim(d: &str) -> Dimension {
    let mut x = Dimension::new();
    x.value = match d.parse::<i64>() {
        Ok(v) => Some(dimension::Value::DimValue(v)),
        Err(_) if d == "?" => None,
        Err(_) => Some(dimension::Value::DimParam(d.to_string())),
    };
    x
}

pub fn value_info(name: &str, elem: i32, dims: Option<&[&str]>) -> ValueInfoProto {
    let mut t = type_proto::Tensor::new();
    t.elem_type = elem;
    if let Some(dims) = dims {
        let mut s = TensorShapeProto::new();
        s.dim = dims.iter().map(|d| dim(d)).collect();
        t.shape = Some(s).into();
    }
    let mut ty = TypeProto::new();
    ty.value = Some(TypeValue::TensorType(t));
    ValueInfoProto {
        name: name.into(),
        type_: Some(ty).into(),
        ..Default::default()
    }
}

impl M {
    pub fn new(opset: i64) -> Self {
        let mut model = ModelProto::new();
        model.ir_version = 8;
        model.producer_name = "nnc-tests".into();
        model.opset_import.push(OperatorSetIdProto {
            domain: String::new(),
            version: opset,
            ..Default::default()
        });
        model.graph = Some(GraphProto {
            name: "test".into(),
            ..Default::default()
        })
        .into();
        M { model }
    }

    pub fn g(&mut self) -> &mut GraphProto {
        self.model.graph.as_mut().unwrap()
    }

    /// Input with dims like ["1", "batch", "64"].
    pub fn input(mut self, name: &str, elem: i32, dims: &[&str]) -> Self {
        self.g().input.push(value_info(name, elem, Some(dims)));
        self
    }

    pub fn input_f32(self, name: &str, dims: &[usize]) -> Self {
        let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let d: Vec<&str> = d.iter().map(String::as_str).collect();
        self.input(name, FLOAT, &d)
    }

    pub fn output(mut self, name: &str) -> Self {
        self.g().output.push(ValueInfoProto {
            name: name.into(),
            ..Default::default()
        });
        self
    }

    pub fn init(mut self, t: TensorProto) -> Self {
        self.g().initializer.push(t);
        self
    }

    pub fn node(
        mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        self.g().node.push(node(name, op, inputs, outputs, attrs));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.model.write_to_bytes().unwrap()
    }
}

pub fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

pub fn tf32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: FLOAT,
        dims: dims.to_vec(),
        float_data: data.to_vec(),
        ..Default::default()
    }
}

pub fn ti64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: INT64,
        dims: dims.to_vec(),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: ty.into(),
        ..Default::default()
    }
}

pub fn ai(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: v,
        ..attr(name, AttributeType::INT)
    }
}

pub fn ais(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::INTS)
    }
}

pub fn af(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: v,
        ..attr(name, AttributeType::FLOAT)
    }
}

pub fn astr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: v.as_bytes().to_vec(),
        ..attr(name, AttributeType::STRING)
    }
}

pub fn at(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t).into(),
        ..attr(name, AttributeType::TENSOR)
    }
}
