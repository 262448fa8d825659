//! Cranelift code generation, generic over `cranelift_module::Module` so
//! the AOT object writer and the JIT get exactly the same functions.
//!
//! A model becomes: one local function per kernel step, the weights as
//! local read-only data, the `nnc_model_info` struct as relocated data, and
//! the exported entry points `<prefix>_run` / `<prefix>_info` plus their
//! fixed-name twins `nnc_model_run` / `nnc_model_info` for generic loaders.

mod attention;
pub mod blocked;
mod conv;
mod dwconv;
mod elementwise;
mod gemm;
pub use gemm::runs_inline as gemm_runs_inline;
mod indexing;
mod kb;
pub mod kernels;
mod math;
mod movement;
mod parallel;
mod pool;
mod reduce;
pub mod target;
mod typed;
pub mod winograd;
pub mod x86;

use crate::ir::{Graph, ValueKind};
use crate::lower::{Loc, Plan, Step, ALIGN};
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, UserFuncName, Value};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use kb::{Kb, PTR};

/// Status codes returned by `run` (documented in the generated header).
pub mod status {
    pub const OK: i64 = 0;
    /// A required pointer argument (inputs, outputs, or one of their entries) was NULL.
    pub const NULL_ARGUMENT: i64 = 1;
    /// The library had to allocate the workspace and allocation failed.
    pub const ALLOC_FAILED: i64 = 2;
    /// A run-time index (e.g. Gather indices) was out of range.
    pub const INDEX_OUT_OF_RANGE: i64 = 3;
}

pub const PRODUCER: &str = concat!("nnc ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("{0}")]
    Unsupported(String),
    #[error("cranelift: {0}")]
    Module(String),
}

fn merr(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Module(e.to_string())
}

/// Symbols of the entry points defined in the module.
pub struct Entry {
    pub run: FuncId,
    pub info: FuncId,
    /// Task functions defined for splitting kernels over threads.
    pub task_functions: usize,
}

pub struct Options {
    pub has_fma: bool,
    /// Assembled x86-64 GEMM kernels at this level (`Target::gemm_level`).
    pub gemm_level: Option<x86::Level>,
}

/// Defines the whole model in `m`.
pub fn define_model<M: Module>(
    m: &mut M,
    g: &Graph,
    plan: &Plan,
    prefix: &str,
    opts: &Options,
) -> Result<Entry, CodegenError> {
    let ptr = m.target_config().pointer_type();
    assert_eq!(ptr, I64, "nnc targets are 64-bit");
    // Ops the optimizer offers only for some targets: refuse them on others
    // (a graph optimized for another machine) instead of failing inside a
    // kernel.
    for step in &plan.steps {
        if let Step::Kernel { value, .. } = step {
            if let ValueKind::Op {
                op: op @ crate::ir::Op::ConvBlocked { .. },
                ..
            } = &g.value(*value).kind
            {
                if opts.gemm_level != Some(x86::Level::Avx512) {
                    return Err(CodegenError::Unsupported(format!(
                        "node {}: {} has kernels for x86-64 AVX-512 only (the graph was \
                         optimized for another target)",
                        g.value(*value).name,
                        op.name()
                    )));
                }
            }
        }
    }
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = m.make_context();

    // Kernels, noting which of their pointer parameters they read.
    let mut kernel_ids = Vec::new();
    let mut params_used: Vec<Vec<bool>> = Vec::new();
    let tcfg = m.target_config();
    let mut asm_state = x86::backend::AsmState::default();
    let mut task_count = 0usize;
    for (si, step) in plan.steps.iter().enumerate() {
        let (nargs, name) = match step {
            Step::Kernel { value, scratch } => {
                let ValueKind::Op { op, args } = &g.value(*value).kind else {
                    unreachable!()
                };
                (
                    args.len() + 2 + scratch.is_some() as usize,
                    format!("{prefix}__k{si}_{}", op.name()),
                )
            }
            Step::Copy { .. } => (3, format!("{prefix}__k{si}_copy")),
        };
        let mut sig = m.make_signature();
        for _ in 0..nargs {
            sig.params.push(AbiParam::new(PTR));
        }
        sig.returns.push(AbiParam::new(I32));
        let fid = m
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(merr)?;
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, fid.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let mut params = b.block_params(entry).to_vec();
            // Last parameter: run's `const nnc_threads *`.
            let threads = params.pop().expect("threads parameter");
            let mut env = parallel::ModuleEnv {
                be: x86::backend::ModuleBackend {
                    module: &mut *m,
                    state: &mut asm_state,
                    prefix,
                    level: opts.gemm_level,
                },
                tasks: &mut task_count,
                error: None,
            };
            let mut k = Kb::new(b, opts.has_fma)
                .with_env(Some(&mut env as &mut dyn parallel::Env))
                .with_threads(Some(threads));
            let st = match step {
                Step::Kernel { value, scratch } => {
                    let n = params.len() - 1 - scratch.is_some() as usize;
                    let s = scratch.map(|_| params[n + 1]);
                    kernels::emit(&mut k, g, *value, &params[..n], params[n], s)
                }
                Step::Copy { src, .. } => {
                    let t = g.ty(*src);
                    movement::copy(&mut k, params[1], params[0], t.numel(), t.dtype.size());
                    k.b.ins().iconst(I32, 0)
                }
            };
            k.b.ins().return_(&[st]);
            k.b.finalize(tcfg);
            if let Some(e) = env.error {
                return Err(CodegenError::Module(e));
            }
        }
        if std::env::var_os("NNC_DUMP_CLIF").is_some() {
            eprintln!("{}", ctx.func.display());
        }
        params_used.push(used_params(&ctx.func));
        m.define_function(fid, &mut ctx).map_err(merr)?;
        m.clear_context(&mut ctx);
        kernel_ids.push(fid);
    }

    // Weights: only those a kernel reads. A kernel that reads a weight
    // pre-packed or transformed at compile time (constant GEMM operands,
    // Winograd filters) has its own copy, and the raw tensor would only
    // double the library's size.
    let needed = needed_weights(g, plan, &params_used);
    let mut weight_ids = Vec::new();
    for (i, &v) in plan.weights.iter().enumerate() {
        if !needed[i] {
            weight_ids.push(None);
            continue;
        }
        let t = g.as_const(v).expect("weights are constants");
        let mut bytes = t.to_le_bytes();
        if bytes.is_empty() {
            bytes.push(0);
        }
        let id = m
            .declare_data(&format!("{prefix}__w{i}"), Linkage::Local, false, false)
            .map_err(merr)?;
        let mut d = DataDescription::new();
        d.define(bytes.into_boxed_slice());
        d.set_align(ALIGN as u64);
        m.define_data(id, &d).map_err(merr)?;
        weight_ids.push(Some(id));
    }

    // libc allocation for callers that pass no workspace.
    let mut alloc_sig = m.make_signature();
    alloc_sig.params.push(AbiParam::new(PTR));
    alloc_sig.params.push(AbiParam::new(PTR));
    alloc_sig.returns.push(AbiParam::new(PTR));
    let alloc = m
        .declare_function("aligned_alloc", Linkage::Import, &alloc_sig)
        .map_err(merr)?;
    let mut free_sig = m.make_signature();
    free_sig.params.push(AbiParam::new(PTR));
    let free = m
        .declare_function("free", Linkage::Import, &free_sig)
        .map_err(merr)?;

    // run(inputs, outputs, workspace, threads) -> i32
    let mut run_sig = m.make_signature();
    for _ in 0..4 {
        run_sig.params.push(AbiParam::new(PTR));
    }
    run_sig.returns.push(AbiParam::new(I32));
    let run = m
        .declare_function(&format!("{prefix}_run"), Linkage::Export, &run_sig)
        .map_err(merr)?;
    ctx.func.signature = run_sig.clone();
    ctx.func.name = UserFuncName::user(0, run.as_u32());
    build_run(
        m,
        &mut ctx,
        &mut fctx,
        g,
        plan,
        &weight_ids,
        &kernel_ids,
        &params_used,
        alloc,
        free,
    )?;
    m.define_function(run, &mut ctx).map_err(merr)?;
    m.clear_context(&mut ctx);

    let info_data = define_info(m, g, plan, prefix)?;
    let info = define_getter(m, &mut ctx, &mut fctx, &format!("{prefix}_info"), info_data)?;
    if prefix != "nnc_model" {
        define_getter(m, &mut ctx, &mut fctx, "nnc_model_info", info_data)?;
        define_forwarder(m, &mut ctx, &mut fctx, "nnc_model_run", run, &run_sig)?;
    }
    Ok(Entry {
        run,
        info,
        task_functions: task_count,
    })
}

#[allow(clippy::too_many_arguments)]
fn build_run<M: Module>(
    m: &mut M,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    g: &Graph,
    plan: &Plan,
    weights: &[Option<DataId>],
    kernels: &[FuncId],
    params_used: &[Vec<bool>],
    alloc: FuncId,
    free: FuncId,
) -> Result<(), CodegenError> {
    let wrefs: Vec<_> = weights
        .iter()
        .map(|w| w.map(|w| m.declare_data_in_func(w, &mut ctx.func)))
        .collect();
    let krefs: Vec<_> = kernels
        .iter()
        .map(|&f| m.declare_func_in_func(f, &mut ctx.func))
        .collect();
    let alloc_ref = m.declare_func_in_func(alloc, &mut ctx.func);
    let free_ref = m.declare_func_in_func(free, &mut ctx.func);
    let mf = MemFlagsData::new().with_notrap();
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry).to_vec();
    let (inputs, outputs, ws_arg, threads) = (p[0], p[1], p[2], p[3]);
    let fail = b.create_block();
    b.append_block_param(fail, I32);

    // Argument checks: every pointer the model will touch must be non-NULL.
    let null_status = b.ins().iconst(I32, status::NULL_ARGUMENT);
    let check_nonnull = |b: &mut FunctionBuilder, v: Value| {
        let next = b.create_block();
        b.ins().brif(v, next, &[], fail, &[null_status.into()]);
        b.switch_to_block(next);
        b.seal_block(next);
    };
    let mut in_ptrs = Vec::new();
    if !g.inputs.is_empty() {
        check_nonnull(&mut b, inputs);
        for i in 0..g.inputs.len() {
            let v = b.ins().load(PTR, mf, inputs, (8 * i) as i32);
            check_nonnull(&mut b, v);
            in_ptrs.push(v);
        }
    }
    let mut out_ptrs = Vec::new();
    if !g.outputs.is_empty() {
        check_nonnull(&mut b, outputs);
        for i in 0..g.outputs.len() {
            let v = b.ins().load(PTR, mf, outputs, (8 * i) as i32);
            check_nonnull(&mut b, v);
            out_ptrs.push(v);
        }
    }

    // Workspace: the caller's, or our own allocation.
    let ws_var = b.declare_var(PTR);
    let owned_var = b.declare_var(PTR);
    let zero = b.ins().iconst(PTR, 0);
    b.def_var(ws_var, ws_arg);
    b.def_var(owned_var, zero);
    if plan.workspace_size > 0 {
        let need = b.create_block();
        let have = b.create_block();
        b.ins().brif(ws_arg, have, &[], need, &[]);
        b.switch_to_block(need);
        b.seal_block(need);
        let al = b.ins().iconst(PTR, ALIGN as i64);
        let sz = b.ins().iconst(PTR, plan.workspace_size as i64);
        let call = b.ins().call(alloc_ref, &[al, sz]);
        let mem = b.inst_results(call)[0];
        b.def_var(ws_var, mem);
        b.def_var(owned_var, mem);
        let ok = b.create_block();
        let alloc_status = b.ins().iconst(I32, status::ALLOC_FAILED);
        b.ins().brif(mem, ok, &[], fail, &[alloc_status.into()]);
        b.switch_to_block(ok);
        b.seal_block(ok);
        b.ins().jump(have, &[]);
        b.switch_to_block(have);
        b.seal_block(have);
    }
    let ws = b.use_var(ws_var);

    let done = b.create_block();
    b.append_block_param(done, I32);
    let ptr_of = |b: &mut FunctionBuilder, loc: Loc| -> Value {
        match loc {
            Loc::Input(i) => in_ptrs[i],
            Loc::Output(i) => out_ptrs[i],
            // Not embedded: no kernel reads it (see `needed_weights`).
            Loc::Weight(i) => match wrefs[i] {
                Some(w) => b.ins().symbol_value(PTR, w),
                None => b.ins().iconst(PTR, 0),
            },
            Loc::Work(off) => b.ins().iadd_imm_s(ws, off as i64),
        }
    };
    for (si, step) in plan.steps.iter().enumerate() {
        let args: Vec<Value> = match step {
            Step::Kernel { value, scratch } => {
                let ValueKind::Op { args, .. } = &g.value(*value).kind else {
                    unreachable!()
                };
                let mut v: Vec<Value> = args.iter().map(|&a| ptr_of(&mut b, plan.loc(a))).collect();
                v.push(ptr_of(&mut b, plan.loc(*value)));
                if let Some(off) = scratch {
                    v.push(ptr_of(&mut b, Loc::Work(*off)));
                }
                v
            }
            Step::Copy { src, output } => vec![ptr_of(&mut b, plan.loc(*src)), out_ptrs[*output]],
        };
        // Unread parameters get NULL (their weight may not be embedded).
        let mut args: Vec<Value> = args
            .into_iter()
            .zip(&params_used[si])
            .map(|(v, &used)| if used { v } else { b.ins().iconst(PTR, 0) })
            .collect();
        args.push(threads);
        let call = b.ins().call(krefs[si], &args);
        let st = b.inst_results(call)[0];
        let next = b.create_block();
        b.ins().brif(st, done, &[st.into()], next, &[]);
        b.switch_to_block(next);
        b.seal_block(next);
    }
    let ok = b.ins().iconst(I32, status::OK);
    b.ins().jump(done, &[ok.into()]);

    // Free our workspace (if any) and return the status.
    b.switch_to_block(done);
    b.seal_block(done);
    let st = b.block_params(done)[0];
    let owned = b.use_var(owned_var);
    let do_free = b.create_block();
    let ret = b.create_block();
    b.ins().brif(owned, do_free, &[], ret, &[]);
    b.switch_to_block(do_free);
    b.seal_block(do_free);
    b.ins().call(free_ref, &[owned]);
    b.ins().jump(ret, &[]);
    b.switch_to_block(ret);
    b.seal_block(ret);
    b.ins().return_(&[st]);

    b.switch_to_block(fail);
    b.seal_block(fail);
    let fst = b.block_params(fail)[0];
    // Failures before the workspace exists have nothing to free.
    b.ins().return_(&[fst]);
    b.finalize(m.target_config());
    Ok(())
}

/// Which entry-block parameters of `f` any instruction reads (the last,
/// `threads`, included).
fn used_params(f: &cranelift_codegen::ir::Function) -> Vec<bool> {
    let Some(entry) = f.layout.entry_block() else {
        return Vec::new();
    };
    let params = f.dfg.block_params(entry);
    let mut used = vec![false; params.len()];
    for block in f.layout.blocks() {
        for inst in f.layout.block_insts(block) {
            for v in f.dfg.inst_values(inst) {
                let v = f.dfg.resolve_aliases(v);
                if let Some(i) = params.iter().position(|&p| p == v) {
                    used[i] = true;
                }
            }
        }
    }
    used
}

/// Weights some kernel reads through its parameters.
fn needed_weights(g: &Graph, plan: &Plan, params_used: &[Vec<bool>]) -> Vec<bool> {
    let mut needed = vec![false; plan.weights.len()];
    for (step, used) in plan.steps.iter().zip(params_used) {
        let srcs: Vec<crate::ir::ValueId> = match step {
            Step::Kernel { value, .. } => match &g.value(*value).kind {
                ValueKind::Op { args, .. } => args.clone(),
                _ => unreachable!(),
            },
            Step::Copy { src, .. } => vec![*src],
        };
        for (j, a) in srcs.into_iter().enumerate() {
            if let Loc::Weight(i) = plan.loc(a) {
                needed[i] |= used.get(j).copied().unwrap_or(true);
            }
        }
    }
    needed
}

/// The nnc_model_info struct and what it points to, as relocated data.
fn define_info<M: Module>(
    m: &mut M,
    g: &Graph,
    plan: &Plan,
    prefix: &str,
) -> Result<DataId, CodegenError> {
    let n = std::cell::Cell::new(0usize);
    let fresh = || {
        n.set(n.get() + 1);
        format!("{prefix}__info{}", n.get())
    };
    let data = |m: &mut M, bytes: Vec<u8>, align: u64| -> Result<DataId, CodegenError> {
        let id = m
            .declare_data(&fresh(), Linkage::Local, false, false)
            .map_err(merr)?;
        let mut d = DataDescription::new();
        d.define(bytes.into_boxed_slice());
        d.set_align(align);
        m.define_data(id, &d).map_err(merr)?;
        Ok(id)
    };
    let cstr = |m: &mut M, s: &str| -> Result<DataId, CodegenError> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        data(m, b, 1)
    };
    // Tensor info arrays (24 bytes each: name*, dtype, rank, shape*).
    let mut tensor_arrays = Vec::new();
    for list in [
        g.inputs
            .iter()
            .map(|&i| (g.value(i).name.clone(), g.ty(i).clone()))
            .collect::<Vec<_>>(),
        g.outputs
            .iter()
            .map(|o| (o.name.clone(), g.ty(o.value).clone()))
            .collect(),
    ] {
        let mut entries = Vec::new();
        for (name, ty) in &list {
            let name_id = cstr(m, name)?;
            let mut sb: Vec<u8> = ty
                .shape
                .iter()
                .flat_map(|&d| (d as i64).to_le_bytes())
                .collect();
            if sb.is_empty() {
                sb.extend_from_slice(&[0; 8]);
            }
            let shape_id = data(m, sb, 8)?;
            entries.push((name_id, ty.dtype.onnx_code(), ty.rank() as i32, shape_id));
        }
        let id = m
            .declare_data(&fresh(), Linkage::Local, false, false)
            .map_err(merr)?;
        let mut d = DataDescription::new();
        let mut bytes = vec![0u8; 24 * entries.len().max(1)];
        for (i, &(name_id, dtype, rank, shape_id)) in entries.iter().enumerate() {
            bytes[24 * i + 8..24 * i + 12].copy_from_slice(&dtype.to_le_bytes());
            bytes[24 * i + 12..24 * i + 16].copy_from_slice(&rank.to_le_bytes());
            let gn = m.declare_data_in_data(name_id, &mut d);
            d.write_data_addr((24 * i) as u32, gn, 0);
            let gs = m.declare_data_in_data(shape_id, &mut d);
            d.write_data_addr((24 * i + 16) as u32, gs, 0);
        }
        d.define(bytes.into_boxed_slice());
        d.set_align(8);
        m.define_data(id, &d).map_err(merr)?;
        tensor_arrays.push(id);
    }
    let producer = cstr(m, PRODUCER)?;
    // nnc_model_info: u32 abi, u32 ni, u32 no, pad, inputs*, outputs*, u64 ws, u64 align, producer*.
    let mut bytes = vec![0u8; 56];
    bytes[0..4].copy_from_slice(&1u32.to_le_bytes());
    bytes[4..8].copy_from_slice(&(g.inputs.len() as u32).to_le_bytes());
    bytes[8..12].copy_from_slice(&(g.outputs.len() as u32).to_le_bytes());
    bytes[32..40].copy_from_slice(&(plan.workspace_size as u64).to_le_bytes());
    bytes[40..48].copy_from_slice(&(ALIGN as u64).to_le_bytes());
    let id = m
        .declare_data(&format!("{prefix}__info"), Linkage::Local, false, false)
        .map_err(merr)?;
    let mut d = DataDescription::new();
    let gi = m.declare_data_in_data(tensor_arrays[0], &mut d);
    d.write_data_addr(16, gi, 0);
    let go = m.declare_data_in_data(tensor_arrays[1], &mut d);
    d.write_data_addr(24, go, 0);
    let gp = m.declare_data_in_data(producer, &mut d);
    d.write_data_addr(48, gp, 0);
    d.define(bytes.into_boxed_slice());
    d.set_align(8);
    m.define_data(id, &d).map_err(merr)?;
    Ok(id)
}

/// `const nnc_model_info *name(void)`.
fn define_getter<M: Module>(
    m: &mut M,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    name: &str,
    data: DataId,
) -> Result<FuncId, CodegenError> {
    let mut sig = m.make_signature();
    sig.returns.push(AbiParam::new(PTR));
    let fid = m
        .declare_function(name, Linkage::Export, &sig)
        .map_err(merr)?;
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    let gv = m.declare_data_in_func(data, &mut ctx.func);
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let e = b.create_block();
    b.switch_to_block(e);
    b.seal_block(e);
    let p = b.ins().symbol_value(PTR, gv);
    b.ins().return_(&[p]);
    b.finalize(m.target_config());
    m.define_function(fid, ctx).map_err(merr)?;
    m.clear_context(ctx);
    Ok(fid)
}

/// An exported function that calls `target` with its own arguments.
fn define_forwarder<M: Module>(
    m: &mut M,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    name: &str,
    target: FuncId,
    sig: &Signature,
) -> Result<FuncId, CodegenError> {
    let fid = m
        .declare_function(name, Linkage::Export, sig)
        .map_err(merr)?;
    ctx.func.signature = sig.clone();
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    let tref = m.declare_func_in_func(target, &mut ctx.func);
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let e = b.create_block();
    b.append_block_params_for_function_params(e);
    b.switch_to_block(e);
    b.seal_block(e);
    let args = b.block_params(e).to_vec();
    let call = b.ins().call(tref, &args);
    let r = b.inst_results(call)[0];
    b.ins().return_(&[r]);
    b.finalize(m.target_config());
    m.define_function(fid, ctx).map_err(merr)?;
    m.clear_context(ctx);
    Ok(fid)
}
