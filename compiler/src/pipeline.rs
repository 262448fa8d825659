//! The middle of the compiler as one call: legalize, verify, check that
//! codegen supports every node (reporting all that it does not), and plan
//! memory.

use crate::codegen::kernels;
use crate::ir::{Graph, ValueKind};
use crate::lower::{self, Plan};
use crate::opt;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("internal error: invalid IR after {stage}: {msg}")]
    Verify { stage: &'static str, msg: String },
    /// Every node codegen cannot handle, one line each.
    #[error("{} node(s) cannot be compiled:\n{}", .0.len(), .0.join("\n"))]
    Unsupported(Vec<String>),
}

/// Runs the post-frontend stages without the optimizer.
pub fn prepare(g: Graph) -> Result<(Graph, Plan), PipelineError> {
    let (g, plan, _) = prepare_with(g, None)?;
    Ok((g, plan))
}

/// Runs the post-frontend stages: the egg optimizer (when given a machine
/// model), legalization, the codegen support check and the memory plan.
pub fn prepare_with(
    g: Graph,
    opt: Option<(&opt::cost::Machine, &opt::Limits)>,
) -> Result<(Graph, Plan, Option<opt::Stats>), PipelineError> {
    g.verify().map_err(|e| PipelineError::Verify {
        stage: "import",
        msg: e.0,
    })?;
    let (mut g, stats) = match opt {
        Some((m, limits)) => {
            let (g2, stats) = opt::optimize(&g, m, limits);
            g2.verify().map_err(|e| PipelineError::Verify {
                stage: "optimize",
                msg: e.0,
            })?;
            (g2, Some(stats))
        }
        None => (g, None),
    };
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
    Ok((g, plan, stats))
}
