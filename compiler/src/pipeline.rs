//! The middle of the compiler as one call: legalize, verify, check that
//! codegen supports every node (reporting all that it does not), and plan
//! memory.

use crate::codegen::kernels;
use crate::ir::{Graph, ValueKind};
use crate::lower::{self, Plan};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("internal error: invalid IR after {stage}: {msg}")]
    Verify { stage: &'static str, msg: String },
    /// Every node codegen cannot handle, one line each.
    #[error("{} node(s) cannot be compiled:\n{}", .0.len(), .0.join("\n"))]
    Unsupported(Vec<String>),
}

/// Runs the post-frontend stages and returns the final graph and its plan.
pub fn prepare(mut g: Graph) -> Result<(Graph, Plan), PipelineError> {
    g.verify().map_err(|e| PipelineError::Verify {
        stage: "import",
        msg: e.0,
    })?;
    lower::legalize::legalize(&mut g);
    g.verify().map_err(|e| PipelineError::Verify {
        stage: "legalize",
        msg: e.0,
    })?;
    let uses = g.use_counts();
    let mut problems = Vec::new();
    for id in g.ids() {
        if let ValueKind::Op { op, .. } = &g.value(id).kind {
            if uses[id.index()] == 0 {
                continue;
            }
            if let Err(e) = kernels::check(&g, id) {
                let at = g
                    .value(id)
                    .origin
                    .clone()
                    .unwrap_or_else(|| g.value(id).name.clone());
                problems.push(format!("  node {at}: {}: {e}", op.name()));
            }
        }
    }
    if !problems.is_empty() {
        return Err(PipelineError::Unsupported(problems));
    }
    let plan = lower::plan(&g, &kernels::scratch_bytes);
    Ok((g, plan))
}
