//! Splitting kernels into tasks for the caller's thread pool (`nnc_threads`).
//!
//! Every kernel function receives the `const nnc_threads *` of `run` as its
//! last argument (`Kb::threads`). A kernel family that can split states only
//! *how*: a number of tasks and a body emitting task `i`. [`parallel`] turns
//! that body into a task function `void task(void *ctx, size_t i)` — the
//! values the body needs travel in a ctx struct on the kernel's stack — and
//! emits the dispatch:
//!
//! ```text
//! if (threads && threads->num_threads > 1)
//!     threads->parallel_for(threads->pool, n, task, &ctx);
//! else
//!     serial code: task(&ctx, i) for i in 0..n, or the family's own
//! ```
//!
//! Tasks own disjoint outputs and compute every element with exactly the
//! operations of the serial code, so results are bit-identical whatever the
//! thread count. Reductions are never split across tasks.
//!
//! Scratch: tasks running at once need separate scratch, but a kernel only
//! learns the thread count at run time. Families with scratch therefore use
//! at most [`MAX_SLOTS`] tasks and size their scratch for that many slots;
//! the body gets `slot` = its task index when running in parallel and 0 when
//! serial (so a single-threaded run keeps reusing one cache-warm slot).
//!
//! Inside a task function `Kb::threads` is None: whatever the body emits
//! (GEMMs, loops) runs serially; nothing nests.

use super::kb::{Kb, PTR};
use super::x86::backend::{self, GemmBackend, ModuleBackend};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, Signature, StackSlotData, StackSlotKind, Type, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataId, FuncId, Linkage, Module};

/// Most tasks one kernel splits into (enough to balance up to ~8 threads).
pub const MAX_TASKS: usize = 16;
/// Most tasks (and scratch slots) of a kernel whose tasks need scratch.
pub const MAX_SLOTS: usize = 8;

/// Field offsets in `nnc_threads`.
const NUM_THREADS: i32 = 0;
const POOL: i32 = 8;
const PARALLEL_FOR: i32 = 16;

/// What kernels need from the module being built.
pub trait Env {
    /// The assembled-GEMM backend, when the target has one.
    fn gemm(&mut self) -> Option<&mut dyn GemmBackend>;
    /// Defines a local function `void task(void *ctx, size_t i)` whose body
    /// `build(k, ctx, i)` emits (without the return). None on failure (the
    /// error is kept for `define_model` to report); the caller then emits
    /// its work serially instead.
    fn define_task(
        &mut self,
        has_fma: bool,
        build: &mut dyn FnMut(&mut Kb, Value, Value),
    ) -> Option<(FuncId, Signature)>;
    /// Read-only, 64-byte aligned data object `key` (any target), made by
    /// `make` on first use.
    fn data(&mut self, key: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Option<DataId>;
}

/// [`Env`] over a `cranelift_module::Module` (object file or JIT).
pub struct ModuleEnv<'a, M: Module> {
    pub be: ModuleBackend<'a, M>,
    /// Task functions defined so far in the model (names them).
    pub tasks: &'a mut usize,
    /// The first failure to define a task function.
    pub error: Option<String>,
}

impl<M: Module> ModuleEnv<'_, M> {
    fn try_define_task(
        &mut self,
        has_fma: bool,
        build: &mut dyn FnMut(&mut Kb, Value, Value),
    ) -> Result<(FuncId, Signature), String> {
        let (fid, sig, mut ctx, tcfg) = {
            let m = &mut *self.be.module;
            let mut sig = m.make_signature();
            sig.params.push(AbiParam::new(PTR));
            sig.params.push(AbiParam::new(PTR));
            let name = format!("{}__task{}", self.be.prefix, *self.tasks);
            *self.tasks += 1;
            let fid = m
                .declare_function(&name, Linkage::Local, &sig)
                .map_err(|e| e.to_string())?;
            let mut ctx = m.make_context();
            ctx.func.signature = sig.clone();
            ctx.func.name = UserFuncName::user(0, fid.as_u32());
            (fid, sig, ctx, m.target_config())
        };
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let p = b.block_params(entry).to_vec();
            let mut k = Kb::new(b, has_fma).with_env(Some(self as &mut dyn Env));
            build(&mut k, p[0], p[1]);
            k.b.ins().return_(&[]);
            k.b.finalize(tcfg);
        }
        if std::env::var_os("NNC_DUMP_CLIF").is_some() {
            eprintln!("{}", ctx.func.display());
        }
        self.be
            .module
            .define_function(fid, &mut ctx)
            .map_err(|e| format!("task function: {e:?}"))?;
        Ok((fid, sig))
    }
}

impl<M: Module> Env for ModuleEnv<'_, M> {
    fn data(&mut self, key: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Option<DataId> {
        // The backend's data objects need no assembled level.
        self.be.data(key, make)
    }

    fn gemm(&mut self) -> Option<&mut dyn GemmBackend> {
        if self.be.level.is_some() {
            Some(&mut self.be)
        } else {
            None
        }
    }

    fn define_task(
        &mut self,
        has_fma: bool,
        build: &mut dyn FnMut(&mut Kb, Value, Value),
    ) -> Option<(FuncId, Signature)> {
        if self.error.is_some() {
            return None;
        }
        match self.try_define_task(has_fma, build) {
            Ok(r) => Some(r),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

/// How many tasks `work` (in any unit) over `items` independent items is
/// worth: one per `min_work`, at most one per item and `max`; 1 when the
/// whole is below `split_at`.
pub fn tasks_for(items: usize, work: usize, split_at: usize, min_work: usize, max: usize) -> usize {
    if items < 2 || work < split_at {
        return 1;
    }
    (work / min_work.max(1)).clamp(1, items.min(max))
}

/// A task body: `(k, captures, task, slot)`. `captures` are the values
/// handed to [`parallel`], reloaded inside the task function.
pub type Body<'b> = dyn FnMut(&mut Kb, &[Value], Value, Value) + 'b;

/// Runs `tasks` tasks of `body` over the kernel's thread pool (see the
/// module docs). `caps` are the values (of the kernel function) the body
/// may use; it must use no other value of the kernel function. `serial`
/// replaces the default single-threaded code (every task in order, slot 0).
pub fn parallel(
    k: &mut Kb,
    tasks: usize,
    caps: &[Value],
    body: &mut Body,
    serial: Option<&mut dyn FnMut(&mut Kb)>,
) {
    let threads = match k.threads {
        Some(t) if tasks > 1 => t,
        _ => return inline(k, tasks, caps, body, serial),
    };
    let has_fma = k.has_fma;
    let tys: Vec<Type> = caps.iter().map(|&v| k.ty(v)).collect();
    let n = caps.len();
    let def = match k.env.as_deref_mut() {
        Some(env) => env.define_task(has_fma, &mut |tk, ctx, i| {
            let loaded: Vec<Value> = tys
                .iter()
                .enumerate()
                .map(|(j, &t)| tk.load(t, ctx, 8 * j as i64))
                .collect();
            let par = tk.load(I64, ctx, 8 * n as i64);
            let slot = tk.b.ins().imul(i, par);
            body(tk, &loaded, i, slot);
        }),
        None => None,
    };
    let Some((fid, sig)) = def else {
        return inline(k, tasks, caps, body, serial);
    };
    let fref = backend::import_function(k.b.func, fid, sig);
    let ss = k.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        8 * (n as u32 + 1),
        3,
    ));
    let store_ctx = |k: &mut Kb, par: i64| {
        for (j, &v) in caps.iter().enumerate() {
            k.b.ins().stack_store(PTR, v, ss, 8 * j as i32);
        }
        let p = k.iconst(par);
        k.b.ins().stack_store(PTR, p, ss, 8 * n as i32);
        k.b.ins().stack_addr(PTR, ss, 0)
    };
    let check = k.b.create_block();
    let par = k.b.create_block();
    let ser = k.b.create_block();
    let done = k.b.create_block();
    k.b.ins().brif(threads, check, &[], ser, &[]);
    k.b.switch_to_block(check);
    k.b.seal_block(check);
    let nt = k.load(PTR, threads, NUM_THREADS as i64);
    let many = k.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, nt, 1);
    k.b.ins().brif(many, par, &[], ser, &[]);

    k.b.switch_to_block(par);
    k.b.seal_block(par);
    let ctx = store_ctx(k, 1);
    let pool = k.load(PTR, threads, POOL as i64);
    let pf = k.load(PTR, threads, PARALLEL_FOR as i64);
    let faddr = k.b.ins().func_addr(PTR, fref);
    let mut psig = Signature::new(k.b.func.signature.call_conv);
    for _ in 0..4 {
        psig.params.push(AbiParam::new(PTR));
    }
    let sref = k.b.import_signature(psig);
    let nt = k.iconst(tasks as i64);
    k.b.ins().call_indirect(sref, pf, &[pool, nt, faddr, ctx]);
    k.b.ins().jump(done, &[]);

    k.b.switch_to_block(ser);
    k.b.seal_block(ser);
    match serial {
        Some(f) => f(k),
        None => {
            let ctx = store_ctx(k, 0);
            k.for_range(0, tasks as i64, 1, |k, t| {
                k.b.ins().call(fref, &[ctx, t]);
            });
        }
    }
    k.b.ins().jump(done, &[]);
    k.b.switch_to_block(done);
    k.b.seal_block(done);
}

/// The single-threaded code when no task function is used.
fn inline(
    k: &mut Kb,
    tasks: usize,
    caps: &[Value],
    body: &mut Body,
    serial: Option<&mut dyn FnMut(&mut Kb)>,
) {
    match serial {
        Some(f) => f(k),
        None => {
            let zero = k.iconst(0);
            k.for_range(0, tasks as i64, 1, |k, t| body(k, caps, t, zero));
        }
    }
}

/// Splits items `0..items` into `tasks` contiguous ranges and runs them with
/// [`parallel`]: `item(k, caps, i, slot)` emits item `i`. With one task (or
/// no threads) this is a plain loop over the items.
pub fn parallel_items(k: &mut Kb, items: usize, tasks: usize, caps: &[Value], item: &mut Body) {
    parallel_items_or(k, items, tasks, caps, item, None)
}

/// [`parallel_items`] with the single-threaded code given by `serial`
/// (when tasks are set up at all), e.g. a coarser split of the same work.
pub fn parallel_items_or(
    k: &mut Kb,
    items: usize,
    tasks: usize,
    caps: &[Value],
    item: &mut Body,
    serial: Option<&mut dyn FnMut(&mut Kb)>,
) {
    let tasks = tasks.clamp(1, items.max(1));
    if tasks <= 1 || k.threads.is_none() {
        let zero = k.iconst(0);
        k.for_range(0, items as i64, 1, |k, i| item(k, caps, i, zero));
        return;
    }
    // Balanced ranges [t·items/tasks, (t+1)·items/tasks): sizes differ by
    // at most one, so an even task count splits evenly over 2 or 4 threads
    // (ceil-sized ranges made 14 items 7 tasks of 2: 8 vs 6 on 2 threads).
    parallel(
        k,
        tasks,
        caps,
        &mut |k, c, t, slot| {
            let bound = |k: &mut Kb, t: Value| {
                if items.is_multiple_of(tasks) {
                    k.b.ins().imul_imm_s(t, (items / tasks) as i64)
                } else {
                    let p = k.b.ins().imul_imm_s(t, items as i64);
                    k.b.ins().udiv_imm_u(p, tasks as i64)
                }
            };
            let lo = bound(k, t);
            let t1 = k.b.ins().iadd_imm_s(t, 1);
            let hi = bound(k, t1);
            k.for_dyn(lo, hi, 1, |k, i| item(k, c, i, slot));
        },
        serial,
    );
}

/// For tasks whose last one differs (a shorter tail): emits `f(k, true)`
/// when `t` is the last of `tasks`, else `f(k, false)`; just the latter
/// when `differs` is false.
pub fn last_or_rest(
    k: &mut Kb,
    t: Value,
    tasks: usize,
    f: &mut dyn FnMut(&mut Kb, bool),
    differs: bool,
) {
    if !differs {
        return f(k, false);
    }
    let last = k.b.ins().icmp_imm_s(IntCC::Equal, t, tasks as i64 - 1);
    // Both arms call `f`; only one runs, so the shared borrow never overlaps.
    let f = std::cell::RefCell::new(f);
    k.if_else(
        last,
        |k| (f.borrow_mut())(k, true),
        |k| (f.borrow_mut())(k, false),
    );
}

/// Emits `f(k, 2)` when the kernel's pool has at most two threads, else
/// `f(k, many)`: for splits whose pieces lose efficiency as they shrink,
/// so they are cut only as finely as the threads present need.
pub fn two_or(k: &mut Kb, many: usize, f: &mut dyn FnMut(&mut Kb, usize)) {
    let Some(threads) = k.threads else {
        return f(k, many);
    };
    if many <= 2 {
        return f(k, many);
    }
    // Null threads count as few (the split then runs serially anyway).
    let zero = k.iconst(0);
    let nt = k.var(I64, zero);
    k.if_else(
        threads,
        |k| {
            let n = k.load(PTR, threads, NUM_THREADS as i64);
            k.set(nt, n);
        },
        |_| {},
    );
    let nt = k.get(nt);
    let few = k.b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, nt, 2);
    let f = std::cell::RefCell::new(f);
    k.if_else(
        few,
        |k| (f.borrow_mut())(k, 2),
        |k| (f.borrow_mut())(k, many),
    );
}
