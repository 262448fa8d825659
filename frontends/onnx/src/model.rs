//! Model-level translation: versions, initializers, inputs and their shapes,
//! node scheduling, outputs and final checks.

use crate::builder::Ctx;
use crate::error::{esc, Error, SymbolicInput, Unsupported};
use crate::node::Node;
use crate::ops;
use crate::tensor::{const_dtype, dtype_name, from_proto};
use crate::{ModelSummary, Options, MAX_OPSET, MIN_OPSET};
use nnc_compiler::ir::{DType, Graph, Tensor, TensorType};
use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use onnx_protobuf::{GraphProto, Message, ModelProto, ValueInfoProto};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

type Result<T> = std::result::Result<T, Error>;

/// IR version 3 introduced opset imports, which nnc needs to read semantics.
const MIN_IR_VERSION: i64 = 3;
/// The newest IR of a released ONNX (1.23). Later IR versions added only
/// element types and fields that nnc refuses or ignores, so accepting all
/// known ones is safe (onnx.helper stamps the newest by default); an unknown
/// future one may change meaning and is refused, as onnxruntime does.
const MAX_IR_VERSION: i64 = 14;

fn model_err(msg: impl Into<String>) -> Error {
    Error::Model(msg.into())
}

fn parse(bytes: &[u8], file: &str) -> Result<ModelProto> {
    let invalid = |msg: String| Error::Protobuf {
        file: file.into(),
        msg,
    };
    let m = ModelProto::parse_from_bytes(bytes).map_err(|e| invalid(e.to_string()))?;
    check_wire(bytes).map_err(invalid)?;
    if m.ir_version == 0 && m.graph.is_none() {
        return Err(model_err(format!(
            "{file}: not an ONNX model (no ir_version and no graph)"
        )));
    }
    Ok(m)
}

/// Walks the top-level fields of a protobuf message. The protobuf crate
/// accepts a nested message cut short by the end of the data, so a file
/// truncated in its last field would otherwise load as a smaller model.
fn check_wire(bytes: &[u8]) -> std::result::Result<(), String> {
    fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*pos)?;
            *pos += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let bad = || format!("malformed field at byte {start}");
        let key = varint(bytes, &mut pos).ok_or_else(bad)?;
        let len = match key & 7 {
            0 => varint(bytes, &mut pos).map(|_| 0).ok_or_else(bad)?,
            1 => 8,
            5 => 4,
            2 => varint(bytes, &mut pos).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let end = (pos as u64).saturating_add(len);
        if end > bytes.len() as u64 {
            return Err(format!(
                "field {} at byte {start} needs {len} bytes but the data ends after {}",
                key >> 3,
                bytes.len() - pos
            ));
        }
        pos = end as usize;
    }
    Ok(())
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

fn default_opset(m: &ModelProto) -> Result<i64> {
    let v = m
        .opset_import
        .iter()
        .filter(|o| is_default_domain(&o.domain))
        .map(|o| o.version)
        .max()
        .ok_or_else(|| no_default_domain(m))?;
    let range = format!("({MIN_OPSET}..={MAX_OPSET})");
    if v > MAX_OPSET {
        return Err(model_err(format!(
            "opset {v} of the default domain is newer than nnc supports {range}"
        )));
    }
    if v < MIN_OPSET {
        return Err(model_err(format!(
            "opset {v} of the default domain is older than nnc supports {range}; convert the model with onnx.version_converter"
        )));
    }
    Ok(v)
}

/// The error for a model without a default-domain opset: it is made of
/// ops of other domains (ai.onnx.ml, training, …), which nnc refuses by name.
fn no_default_domain(m: &ModelProto) -> Error {
    let mut domains: Vec<&str> = Vec::new();
    let nodes = m.graph.as_ref().map_or(&[][..], |g| &g.node[..]);
    let used = nodes.iter().map(|n| n.domain.as_str());
    let imported = m.opset_import.iter().map(|o| o.domain.as_str());
    for d in used.chain(imported) {
        if !is_default_domain(d) && !domains.contains(&d) {
            domains.push(d);
        }
    }
    if domains.is_empty() {
        return model_err("the model imports no opset of the default domain");
    }
    let parts: Vec<String> = domains
        .iter()
        .map(|d| format!("domain {d:?} is not supported"))
        .collect();
    model_err(format!(
        "{} (the model imports no opset of the default domain)",
        parts.join("; ")
    ))
}

pub(crate) fn load(
    bytes: &[u8],
    file: &str,
    base_dir: Option<&Path>,
    opts: &Options,
) -> Result<Graph> {
    let m = parse(bytes, file)?;
    let v = m.ir_version;
    if !(MIN_IR_VERSION..=MAX_IR_VERSION).contains(&v) {
        let age = if v < MIN_IR_VERSION { "older" } else { "newer" };
        return Err(model_err(format!(
            "{file}: ir_version {v} is {age} than nnc supports ({MIN_IR_VERSION}..={MAX_IR_VERSION})"
        )));
    }
    let opset = default_opset(&m)?;
    let gp = m
        .graph
        .as_ref()
        .ok_or_else(|| model_err(format!("{file}: the model has no graph")))?;
    build(gp, opset, base_dir, opts)
}

fn build(gp: &GraphProto, opset: i64, base_dir: Option<&Path>, opts: &Options) -> Result<Graph> {
    let name = if gp.name.is_empty() {
        "main"
    } else {
        gp.name.as_str()
    };
    let mut ctx = Ctx::new(name, base_dir);
    let mut inits = Vec::with_capacity(gp.initializer.len());
    let mut init_names = HashSet::new();
    for (i, t) in gp.initializer.iter().enumerate() {
        if t.name.is_empty() {
            return Err(model_err(format!("initializer #{i} has no name")));
        }
        if !init_names.insert(t.name.as_str()) {
            return Err(model_err(format!(
                "initializer {:?} is defined twice",
                t.name
            )));
        }
        let tensor = from_proto(t, base_dir).map_err(|msg| Error::Tensor {
            name: t.name.clone(),
            msg,
        })?;
        inits.push((t.name.as_str(), tensor));
    }
    if let Some(s) = gp.sparse_initializer.first() {
        let name = s.values.as_ref().map_or(String::new(), |v| v.name.clone());
        return Err(Error::Tensor {
            name,
            msg: "sparse initializers are not supported".into(),
        });
    }
    // Inputs first, so they are %0, %1, ... in the IR text.
    add_inputs(&mut ctx, gp, &init_names, opts)?;
    for (name, tensor) in inits {
        let id = ctx.g.add_const(name, tensor);
        ctx.define(name, id);
    }

    let order = schedule(gp, &ctx, opset)?;
    check_supported(gp, &order)?;
    let mut used: HashSet<&str> = gp.output.iter().map(|o| o.name.as_str()).collect();
    for &i in &order {
        used.extend(gp.node[i].input.iter().map(String::as_str));
    }
    for &i in &order {
        build_node(&mut ctx, gp, i, opset, &used)?;
    }

    let mut seen = HashSet::new();
    for (k, o) in gp.output.iter().enumerate() {
        if o.name.is_empty() {
            return Err(model_err(format!("graph output #{k} has no name")));
        }
        if !seen.insert(o.name.as_str()) {
            return Err(model_err(format!(
                "graph output {:?} is listed twice",
                o.name
            )));
        }
        let id = ctx.lookup(&o.name).ok_or_else(|| {
            model_err(format!(
                "graph output {:?} is not produced by any node, initializer or input",
                o.name
            ))
        })?;
        if let Some(code) = elem_type(o).filter(|&c| c != 0) {
            let declared = DType::from_onnx(code);
            if declared != Some(ctx.ty(id).dtype) {
                // A type nnc has no outputs of is a limitation; a supported
                // one that differs is a broken model.
                let why = match declared {
                    None => format!(
                        ": {} outputs are not supported (nnc outputs are float, int64 or bool)",
                        dtype_name(code)
                    ),
                    Some(_) => String::new(),
                };
                return Err(model_err(format!(
                    "graph output {:?} is declared {} but nnc computes {}{why}",
                    o.name,
                    dtype_name(code),
                    ctx.ty(id).dtype
                )));
            }
        }
        ctx.g.add_output(o.name.as_str(), id);
    }
    for vi in &gp.value_info {
        let (Some(id), Some(code)) = (ctx.lookup(&vi.name), elem_type(vi).filter(|&c| c != 0))
        else {
            continue;
        };
        if const_dtype(code) != Some(ctx.ty(id).dtype) {
            return Err(model_err(format!(
                "value {:?} is declared {} in value_info, but nnc computes {}",
                vi.name,
                dtype_name(code),
                ctx.ty(id).dtype
            )));
        }
    }
    let mut g = ctx.g;
    g.remove_dead();
    g.verify().map_err(|e| {
        model_err(format!(
            "internal error: the translated graph is invalid: {e}"
        ))
    })?;
    Ok(g)
}

fn elem_type(vi: &ValueInfoProto) -> Option<i32> {
    match vi.type_.as_ref()?.value.as_ref()? {
        TypeValue::TensorType(t) => Some(t.elem_type),
        _ => None,
    }
}

/// Adds the runtime inputs (graph inputs that are not initializers), fixing
/// open dims from `--input-shape`; all inputs still open are reported at once.
fn add_inputs(
    ctx: &mut Ctx<'_>,
    gp: &GraphProto,
    inits: &HashSet<&str>,
    opts: &Options,
) -> Result<()> {
    let names: Vec<String> = gp
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| format!("{:?}", i.name))
        .collect();
    let mut given: HashMap<&str, &[usize]> = HashMap::new();
    for (name, dims) in &opts.input_shapes {
        if inits.contains(name.as_str()) {
            return Err(model_err(format!(
                "--input-shape names {name:?}, which is a constant (initializer), not an input"
            )));
        }
        if !gp.input.iter().any(|i| i.name == *name) {
            return Err(model_err(format!(
                "--input-shape names {name:?}, which is not a graph input (inputs: {})",
                names.join(", ")
            )));
        }
        if given.insert(name, dims).is_some() {
            return Err(model_err(format!(
                "--input-shape is given twice for {name:?}"
            )));
        }
    }
    let mut bound: HashMap<&str, &Tensor> = HashMap::new();
    for (name, t) in &opts.bind_inputs {
        if inits.contains(name.as_str()) {
            return Err(model_err(format!(
                "--bind-input names {name:?}, which is a constant (initializer), not an input"
            )));
        }
        if !gp.input.iter().any(|i| i.name == *name) {
            return Err(model_err(format!(
                "--bind-input names {name:?}, which is not a graph input (inputs: {})",
                names.join(", ")
            )));
        }
        if given.contains_key(name.as_str()) {
            return Err(model_err(format!(
                "input {name:?} is given both --input-shape and --bind-input; the bound value fixes its shape"
            )));
        }
        if bound.insert(name, t).is_some() {
            return Err(model_err(format!(
                "--bind-input is given twice for {name:?}"
            )));
        }
    }
    let mut open = Vec::new();
    let mut ready = Vec::new();
    let mut consts = Vec::new();
    let mut seen = HashSet::new();
    for (k, vi) in gp.input.iter().enumerate() {
        let name = vi.name.as_str();
        if name.is_empty() {
            return Err(model_err(format!("graph input #{k} has no name")));
        }
        if inits.contains(name) {
            continue; // an initializer: a constant, not part of the ABI
        }
        if !seen.insert(name) {
            return Err(model_err(format!("graph input {name:?} is listed twice")));
        }
        let tt = match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TypeValue::TensorType(t)) => t,
            Some(_) => {
                return Err(model_err(format!(
                "input {name:?} is not a tensor (sequences, maps and optionals are not supported)"
            )))
            }
            None => return Err(model_err(format!("input {name:?} has no type"))),
        };
        if let Some(&t) = bound.get(name) {
            consts.push((name, check_bound(name, tt, t)?));
            continue;
        }
        let dtype = DType::from_onnx(tt.elem_type).ok_or_else(|| {
            model_err(format!(
                "input {name:?} has element type {}; nnc supports float, int64 and bool inputs",
                dtype_name(tt.elem_type)
            ))
        })?;
        // Model dims: Some(v) when fixed, None (with a label) when open.
        let model: Option<Vec<(Option<usize>, String)>> = tt.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) if *v >= 0 => (Some(*v as usize), String::new()),
                    Some(Dim::DimParam(p)) if !p.is_empty() => (None, p.clone()),
                    _ => (None, "?".to_string()),
                })
                .collect()
        });
        let shape = match (given.get(name), model) {
            (Some(user), None) => user.to_vec(),
            (Some(user), Some(m)) => {
                let flag = format!("--input-shape {}={}", esc(name), join(user));
                if user.len() != m.len() {
                    return Err(model_err(format!(
                        "{flag}: input {name:?} has rank {}",
                        m.len()
                    )));
                }
                for (i, (u, (d, _))) in user.iter().zip(&m).enumerate() {
                    if let Some(d) = d.filter(|d| d != u) {
                        return Err(model_err(format!(
                            "{flag}: dim {i} of input {name:?} is fixed to {d} by the model"
                        )));
                    }
                }
                user.to_vec()
            }
            (None, Some(m)) if m.iter().all(|(d, _)| d.is_some()) => {
                m.iter().filter_map(|(d, _)| *d).collect()
            }
            (None, m) => {
                open.push(SymbolicInput {
                    name: name.to_string(),
                    dims: m
                        .iter()
                        .flatten()
                        .filter(|(d, _)| d.is_none())
                        .map(|(_, l)| l.clone())
                        .collect(),
                    shape: m.map(|m| m.into_iter().map(|(d, _)| d).collect()),
                });
                continue;
            }
        };
        let ty = TensorType::new(dtype, shape);
        if ty.checked_bytes().is_none() {
            return Err(model_err(format!(
                "input {name:?} of type {ty} is too large"
            )));
        }
        ready.push((name, ty));
    }
    if !open.is_empty() {
        return Err(Error::SymbolicDims(open));
    }
    for (name, ty) in ready {
        let id = ctx.g.add_input(name, ty);
        ctx.define(name, id);
    }
    for (name, t) in consts {
        let id = ctx.g.add_const(name, t);
        ctx.define(name, id);
    }
    Ok(())
}

/// Checks a `--bind-input` value against the input's declared type and
/// returns it as the constant to use.
fn check_bound(name: &str, tt: &TypeTensor, t: &Tensor) -> Result<Tensor> {
    let flag = format!("--bind-input {}", esc(name));
    let want = const_dtype(tt.elem_type).ok_or_else(|| {
        model_err(format!(
            "{flag}: input {name:?} has element type {}; nnc supports float, integer and bool values",
            dtype_name(tt.elem_type)
        ))
    })?;
    if t.dtype() != want {
        return Err(model_err(format!(
            "{flag}: input {name:?} is {} but the value is {}",
            dtype_name(tt.elem_type),
            t.dtype()
        )));
    }
    if let Some(s) = tt.shape.as_ref() {
        let shape_err = || {
            model_err(format!(
                "{flag}: the value's shape {:?} does not match input {name:?}'s declared shape",
                t.shape
            ))
        };
        if s.dim.len() != t.shape.len() {
            return Err(shape_err());
        }
        for (d, &v) in s.dim.iter().zip(&t.shape) {
            if matches!(&d.value, Some(Dim::DimValue(x)) if *x >= 0 && *x as usize != v) {
                return Err(shape_err());
            }
        }
    }
    Ok(t.clone())
}

fn join(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The nodes the graph outputs depend on, in topological order (file order
/// where the file allows). Undefined inputs and cycles are errors.
fn schedule(gp: &GraphProto, ctx: &Ctx<'_>, opset: i64) -> Result<Vec<usize>> {
    let node = |i: usize| Node::new(&gp.node[i], i, opset);
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, p) in gp.node.iter().enumerate() {
        for o in p.output.iter().filter(|o| !o.is_empty()) {
            if ctx.lookup(o).is_some() {
                return Err(node(i).err(format!(
                    "output {o:?} redefines an initializer or graph input"
                )));
            }
            if let Some(j) = producer.insert(o, i) {
                return Err(node(i).err(format!(
                    "output {o:?} is also produced by node {:?}",
                    node(j).name
                )));
            }
        }
    }
    let mut live = vec![false; gp.node.len()];
    let mut stack: Vec<usize> = gp
        .output
        .iter()
        .filter_map(|o| producer.get(o.name.as_str()).copied())
        .collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut live[i], true) {
            continue;
        }
        for inp in gp.node[i].input.iter().filter(|s| !s.is_empty()) {
            match producer.get(inp.as_str()) {
                Some(&j) => stack.push(j),
                None if ctx.lookup(inp).is_some() => {}
                None => {
                    return Err(node(i).err(format!(
                        "input {inp:?} is not defined by any node, initializer or graph input"
                    )))
                }
            }
        }
    }
    let mut pending = vec![0usize; gp.node.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); gp.node.len()];
    for i in (0..gp.node.len()).filter(|&i| live[i]) {
        for inp in &gp.node[i].input {
            if let Some(&j) = producer.get(inp.as_str()) {
                pending[i] += 1;
                consumers[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..gp.node.len())
        .filter(|&i| live[i] && pending[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::new();
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &k in &consumers[i] {
            pending[k] -= 1;
            if pending[k] == 0 {
                ready.push(Reverse(k));
            }
        }
    }
    if let Some(i) = (0..gp.node.len()).find(|&i| live[i] && pending[i] > 0) {
        return Err(node(i).err("is part of a cycle or depends on one"));
    }
    Ok(order)
}

/// Refuses, in one error, every node nnc cannot translate.
fn check_supported(gp: &GraphProto, order: &[usize]) -> Result<()> {
    fn add(groups: &mut Vec<(String, Vec<String>)>, key: &str, item: String) {
        match groups.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => v.push(item),
            None => groups.push((key.to_string(), vec![item])),
        }
    }
    let mut u = Unsupported::default();
    for &i in order {
        let n = Node::new(&gp.node[i], i, 0);
        if !is_default_domain(&n.p.domain) {
            add(&mut u.domains, &n.p.domain, n.origin());
        } else if ops::lookup(n.op).is_none() {
            add(&mut u.ops, n.op, n.name.clone());
        }
    }
    if u.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(u))
    }
}

fn build_node(
    ctx: &mut Ctx<'_>,
    gp: &GraphProto,
    i: usize,
    opset: i64,
    used: &HashSet<&str>,
) -> Result<()> {
    let n = Node::new(&gp.node[i], i, opset);
    let build = ops::lookup(n.op).ok_or_else(|| n.err("unsupported op"))?;
    let start = ctx.g.values.len();
    let outs = build(ctx, &n)?;
    for (k, name) in n.p.output.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        match outs.get(k) {
            Some(&id) => {
                if id.index() >= start {
                    ctx.g.values[id.index()].name = name.clone();
                }
                ctx.define(name, id);
            }
            None if used.contains(name.as_str()) => {
                return Err(n.err(format!(
                    "output {k} ({name:?}) is used, but computing it is not supported"
                )));
            }
            None => {}
        }
    }
    Ok(())
}

pub(crate) fn summarize(bytes: &[u8], file: &str) -> Result<ModelSummary> {
    let m = parse(bytes, file)?;
    let mut hist: Vec<(String, usize)> = Vec::new();
    for p in m.graph.as_ref().map_or(&[][..], |g| &g.node[..]) {
        let key = if is_default_domain(&p.domain) {
            p.op_type.clone()
        } else {
            format!("{}.{}", p.domain, p.op_type)
        };
        match hist.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => *c += 1,
            None => hist.push((key, 1)),
        }
    }
    hist.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(ModelSummary {
        opsets: m
            .opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect(),
        producer: format!("{} {}", m.producer_name, m.producer_version)
            .trim()
            .to_string(),
        op_histogram: hist,
        ir_version: m.ir_version,
    })
}
