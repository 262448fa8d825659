//! `#[repr(C)]` mirrors of the types in `include/nnc.h`.
//!
//! These are the raw contract between generated libraries and their callers;
//! the rest of the crate wraps them in safe types. Keep them in lock-step with
//! the header (the layout tests below and in `tests/c_abi.rs` check that).

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

/// Version of the ABI described here; a library reporting another one is refused.
pub const NNC_ABI_VERSION: u32 = 1;

/// Symbol name of the fixed-name info function every generated library exports.
pub const INFO_SYMBOL: &str = "nnc_model_info";
/// Symbol name of the fixed-name run function every generated library exports.
pub const RUN_SYMBOL: &str = "nnc_model_run";

/// `nnc_tensor_info`: one input or output of a model.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nnc_tensor_info {
    /// NUL-terminated ONNX graph name.
    pub name: *const c_char,
    /// ONNX `TensorProto.DataType` code (1 float32, 7 int64, 9 bool).
    pub dtype: i32,
    /// Number of entries in `shape`.
    pub rank: i32,
    /// `rank` dimensions, fixed at compile time.
    pub shape: *const i64,
}

/// `nnc_model_info`: static description of a model, owned by the library.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nnc_model_info {
    /// Must equal [`NNC_ABI_VERSION`].
    pub abi_version: u32,
    pub num_inputs: u32,
    pub num_outputs: u32,
    /// `num_inputs` entries, graph order.
    pub inputs: *const nnc_tensor_info,
    /// `num_outputs` entries, graph order.
    pub outputs: *const nnc_tensor_info,
    /// Bytes of scratch one run needs.
    pub workspace_size: u64,
    /// Alignment of that scratch (a power of two, at least 64).
    pub workspace_align: u64,
    /// NUL-terminated producer string, e.g. `"nnc 0.1.0"`.
    pub producer: *const c_char,
}

/// `nnc_task_fn`: one task of a parallel loop. `Option` because a C function
/// pointer may be NULL; the layout is the same as a bare pointer.
pub type nnc_task_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, task: usize)>;

/// The `parallel_for` member of [`nnc_threads`]: runs `f(ctx, 0..num_tasks)`
/// and returns when all tasks are done.
pub type nnc_parallel_for_fn = Option<
    unsafe extern "C" fn(pool: *mut c_void, num_tasks: usize, f: nnc_task_fn, ctx: *mut c_void),
>;

/// `nnc_threads`: a caller-supplied thread pool.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nnc_threads {
    /// How many tasks may run at once.
    pub num_threads: usize,
    /// Opaque, handed back to `parallel_for`.
    pub pool: *mut c_void,
    pub parallel_for: nnc_parallel_for_fn,
}

/// Type of `M_info` / `nnc_model_info`.
pub type nnc_info_fn = unsafe extern "C" fn() -> *const nnc_model_info;

/// Type of `M_run` / `nnc_model_run`.
pub type nnc_run_fn = unsafe extern "C" fn(
    inputs: *const *const c_void,
    outputs: *const *mut c_void,
    workspace: *mut c_void,
    threads: *const nnc_threads,
) -> c_int;

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn tensor_info_layout() {
        assert_eq!(size_of::<nnc_tensor_info>(), 24);
        assert_eq!(align_of::<nnc_tensor_info>(), 8);
        assert_eq!(offset_of!(nnc_tensor_info, name), 0);
        assert_eq!(offset_of!(nnc_tensor_info, dtype), 8);
        assert_eq!(offset_of!(nnc_tensor_info, rank), 12);
        assert_eq!(offset_of!(nnc_tensor_info, shape), 16);
    }

    #[test]
    fn model_info_layout() {
        assert_eq!(size_of::<nnc_model_info>(), 56);
        assert_eq!(align_of::<nnc_model_info>(), 8);
        assert_eq!(offset_of!(nnc_model_info, abi_version), 0);
        assert_eq!(offset_of!(nnc_model_info, num_inputs), 4);
        assert_eq!(offset_of!(nnc_model_info, num_outputs), 8);
        assert_eq!(offset_of!(nnc_model_info, inputs), 16);
        assert_eq!(offset_of!(nnc_model_info, outputs), 24);
        assert_eq!(offset_of!(nnc_model_info, workspace_size), 32);
        assert_eq!(offset_of!(nnc_model_info, workspace_align), 40);
        assert_eq!(offset_of!(nnc_model_info, producer), 48);
    }

    #[test]
    fn threads_layout() {
        assert_eq!(size_of::<nnc_threads>(), 24);
        assert_eq!(align_of::<nnc_threads>(), 8);
        assert_eq!(offset_of!(nnc_threads, num_threads), 0);
        assert_eq!(offset_of!(nnc_threads, pool), 8);
        assert_eq!(offset_of!(nnc_threads, parallel_for), 16);
        // Nullable function pointers must stay pointer-sized.
        assert_eq!(size_of::<nnc_task_fn>(), 8);
        assert_eq!(size_of::<nnc_parallel_for_fn>(), 8);
    }
}
