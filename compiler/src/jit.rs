//! In-memory compilation with cranelift-jit: the same `define_model` as the
//! AOT path, so JIT and .so results agree bit for bit.

use crate::codegen::{self, target};
use crate::ir::Graph;
use crate::lower::Plan;
use cranelift_jit::{JITBuilder, JITModule};

/// The C entry point signatures shared with generated libraries.
pub type RunFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8, *const u8) -> i32;
pub type InfoFn = unsafe extern "C" fn() -> *const u8;

/// Owns the executable memory of a JIT-compiled model (freed on drop).
pub struct JitCode {
    module: Option<JITModule>,
}

// SAFETY: after `finalize_definitions` the module's code and data are never
// mutated; the generated functions keep no global state, so they may be
// called from any thread. The module itself is only touched again on drop.
unsafe impl Send for JitCode {}
unsafe impl Sync for JitCode {}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: entry points handed out are documented to die with this owner.
            unsafe { m.free_memory() };
        }
    }
}

/// A model compiled into executable memory.
pub struct JitModel {
    pub code: JitCode,
    pub run: RunFn,
    pub info: InfoFn,
    pub workspace_size: usize,
    /// Task functions in the code (kernels that split over threads).
    pub task_functions: usize,
}

impl JitModel {
    pub fn compile(g: &Graph, plan: &Plan) -> Result<JitModel, String> {
        let t = target::build(&target::host_triple(), target::Cpu::Native, false)?;
        let has_fma = t.has_fma;
        let gemm_level = t.gemm_level;
        let builder = JITBuilder::with_isa(t.isa, cranelift_module::default_libcall_names());
        let mut module = JITModule::new(builder);
        let entry = codegen::define_model(
            &mut module,
            g,
            plan,
            "jit",
            &codegen::Options {
                has_fma,
                gemm_level,
            },
        )
        .map_err(|e| e.to_string())?;
        module.finalize_definitions().map_err(|e| e.to_string())?;
        let run_ptr = module.get_finalized_function(entry.run);
        let info_ptr = module.get_finalized_function(entry.info);
        // SAFETY: both were defined with exactly these signatures.
        let (run, info) = unsafe {
            (
                std::mem::transmute::<*const u8, RunFn>(run_ptr),
                std::mem::transmute::<*const u8, InfoFn>(info_ptr),
            )
        };
        Ok(JitModel {
            code: JitCode {
                module: Some(module),
            },
            run,
            info,
            workspace_size: plan.workspace_size,
            task_functions: entry.task_functions,
        })
    }

    /// Runs on raw buffers (shapes are the caller's responsibility).
    ///
    /// # Safety
    /// Every pointer must refer to a buffer of its declared size.
    pub unsafe fn run_raw(&self, inputs: &[*const u8], outputs: &[*mut u8]) -> i32 {
        self.run_raw_with_threads(inputs, outputs, std::ptr::null())
    }

    /// [`JitModel::run_raw`] with a thread pool: `threads` points to an
    /// `nnc_threads` struct (`nnc_runtime::abi::nnc_threads`) or is NULL.
    ///
    /// # Safety
    /// As `run_raw`; `threads` must be NULL or a valid `nnc_threads` whose
    /// pool outlives the call.
    pub unsafe fn run_raw_with_threads(
        &self,
        inputs: &[*const u8],
        outputs: &[*mut u8],
        threads: *const u8,
    ) -> i32 {
        (self.run)(
            inputs.as_ptr(),
            outputs.as_ptr(),
            std::ptr::null_mut(),
            threads,
        )
    }

    /// Runs on f32 buffers (convenience for tests).
    pub fn run_f32(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> i32 {
        let ins: Vec<*const u8> = inputs.iter().map(|x| x.as_ptr() as *const u8).collect();
        let outs: Vec<*mut u8> = outputs
            .iter_mut()
            .map(|x| x.as_mut_ptr() as *mut u8)
            .collect();
        // SAFETY: buffers are live slices for the duration of the call.
        unsafe { self.run_raw(&ins, &outs) }
    }
}
