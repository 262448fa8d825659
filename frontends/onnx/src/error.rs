//! Frontend errors: each renders as one actionable line.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: truncated or invalid protobuf: {msg}")]
    Protobuf { file: String, msg: String },
    /// A problem with the model as a whole (versions, inputs, outputs, names).
    #[error("{0}")]
    Model(String),
    /// A problem with one initializer or constant tensor.
    #[error("tensor {name:?}: {msg}")]
    Tensor { name: String, msg: String },
    /// A problem with one node; `node` is its name or `#<index>`.
    #[error("node {node:?} ({}): {msg}", esc(op))]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    /// Every node nnc cannot translate, all at once, so users see the full
    /// list of what their model needs.
    #[error("{0}")]
    Unsupported(Unsupported),
    /// Inputs whose dims the model leaves open and the options do not fix.
    #[error("{}", fmt_symbolic(.0))]
    SymbolicDims(Vec<SymbolicInput>),
}

/// Escapes control characters (and quotes) so names taken from a model can
/// neither break a one-line message nor drive the terminal.
pub(crate) fn esc(s: &str) -> String {
    s.escape_debug().to_string()
}

/// Unsupported nodes, grouped by op type and by foreign domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsupported {
    /// (op type, node names) for default-domain ops nnc does not implement.
    pub ops: Vec<(String, Vec<String>)>,
    /// (domain, "node (Op)" entries) for nodes of domains nnc does not know.
    pub domains: Vec<(String, Vec<String>)>,
}

impl Unsupported {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.domains.is_empty()
    }
}

/// At most this many names are spelled out per group.
const LIST_MAX: usize = 5;

fn quoted_list(items: &[String]) -> String {
    let mut s: Vec<String> = items
        .iter()
        .take(LIST_MAX)
        .map(|n| format!("{n:?}"))
        .collect();
    if items.len() > LIST_MAX {
        s.push(format!("... {} more", items.len() - LIST_MAX));
    }
    s.join(", ")
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (op, nodes) in &self.ops {
            let mut s = format!("unsupported op {op:?} at node {:?}", nodes[0]);
            let rest = &nodes[1..];
            if !rest.is_empty() {
                let noun = if rest.len() == 1 { "node" } else { "nodes" };
                s += &format!(" (and {} more {noun}: {})", rest.len(), quoted_list(rest));
            }
            parts.push(s);
        }
        for (domain, nodes) in &self.domains {
            parts.push(format!(
                "domain {domain:?} is not supported (used by {})",
                nodes_list(nodes)
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

fn nodes_list(items: &[String]) -> String {
    let mut s: Vec<String> = items.iter().take(LIST_MAX).cloned().collect();
    if items.len() > LIST_MAX {
        s.push(format!("... {} more", items.len() - LIST_MAX));
    }
    s.join(", ")
}

/// One graph input with dims that need `--input-shape`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicInput {
    pub name: String,
    /// The open dims by name (`?` for unnamed); empty if the rank is unknown.
    pub dims: Vec<String>,
    /// Known shape with `None` for open dims; `None` if the rank is unknown.
    pub shape: Option<Vec<Option<usize>>>,
}

fn fmt_symbolic(inputs: &[SymbolicInput]) -> String {
    let parts: Vec<String> = inputs
        .iter()
        .map(|i| match &i.shape {
            None => format!(
                "input {:?} has unknown rank; set its shape with --input-shape {}=D0,D1,...",
                i.name,
                esc(&i.name)
            ),
            Some(shape) => {
                let template: Vec<String> = shape
                    .iter()
                    .enumerate()
                    .map(|(k, d)| d.map_or(format!("D{k}"), |v| v.to_string()))
                    .collect();
                format!(
                    "input {:?} has symbolic dims [{}]; set them with --input-shape {}={}",
                    i.name,
                    i.dims.iter().map(|d| esc(d)).collect::<Vec<_>>().join(", "),
                    esc(&i.name),
                    template.join(",")
                )
            }
        })
        .collect();
    parts.join("; ")
}
