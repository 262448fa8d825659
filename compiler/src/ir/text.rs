//! The readable text form (`nnc compile --emit ir`), also used by golden tests.

use super::graph::{Graph, ValueKind};
use std::fmt::Write;

/// Constants up to this many elements print their values inline.
const INLINE_CONST_ELEMS: usize = 8;

pub fn print(g: &Graph) -> String {
    let mut s = String::new();
    let ins: Vec<String> = g
        .inputs
        .iter()
        .map(|&i| format!("{i}: {}", g.ty(i)))
        .collect();
    let _ = writeln!(s, "graph {}({}) {{", g.name, ins.join(", "));
    for id in g.ids() {
        let v = g.value(id);
        match &v.kind {
            ValueKind::Input(_) => {}
            ValueKind::Const(t) => {
                let body = if t.numel() <= INLINE_CONST_ELEMS {
                    match &t.data {
                        super::TensorData::F32(x) => format!(" {x:?}"),
                        super::TensorData::I64(x) => format!(" {x:?}"),
                        super::TensorData::Bool(x) => format!(" {x:?}"),
                    }
                } else {
                    String::new()
                };
                let _ = writeln!(s, "  {id} = const{body} : {}  # {}", v.ty, v.name);
            }
            ValueKind::Op { op, args } => {
                let a: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                let attrs = op.attrs();
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!(" {{{attrs}}}")
                };
                let _ = write!(
                    s,
                    "  {id} = {}({}){attrs} : {}  # {}",
                    op.name(),
                    a.join(", "),
                    v.ty,
                    v.name
                );
                if let Some(o) = &v.origin {
                    let _ = write!(s, " <- {o}");
                }
                s.push('\n');
            }
        }
    }
    let outs: Vec<String> = g
        .outputs
        .iter()
        .map(|o| format!("{} as {:?}", o.value, o.name))
        .collect();
    let _ = writeln!(s, "  return {}", outs.join(", "));
    s.push_str("}\n");
    s
}
