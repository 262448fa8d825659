//! Loading a generated library and running it safely.

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

use crate::abi::{self, INFO_SYMBOL, RUN_SYMBOL};
use crate::error::{Error, Result};
use crate::info::{ModelInfo, TensorInfo};
use crate::tensor::Tensor;
use crate::threads::ThreadPool;

/// Scratch memory for one run at a time, reusable across runs.
///
/// Holding one per thread avoids an allocation per run; `&mut` access
/// guarantees no two runs share it, which is what makes concurrent runs of
/// one [`Model`] sound.
pub struct Workspace {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a plain heap block with no thread affinity; mutation needs `&mut`.
unsafe impl Send for Workspace {}
// SAFETY: `&Workspace` gives no access to the memory.
unsafe impl Sync for Workspace {}

impl Workspace {
    /// A zeroed block of at least `size` bytes aligned to `align` (a power
    /// of two).
    pub fn new(size: usize, align: usize) -> Result<Workspace> {
        let alloc_err = || Error::Alloc { size, align };
        // Never zero-sized: the allocator forbids it, and a non-null pointer
        // tells the library not to allocate its own.
        let layout = Layout::from_size_align(size.max(1), align).map_err(|_| alloc_err())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or_else(alloc_err)?;
        Ok(Workspace { ptr, layout })
    }

    /// Usable size in bytes.
    pub fn size(&self) -> usize {
        self.layout.size()
    }

    pub fn align(&self) -> usize {
        self.layout.align()
    }

    fn fits(&self, info: &ModelInfo) -> Result<()> {
        if self.size() < info.workspace_size || self.align() < info.workspace_align {
            return Err(Error::Workspace {
                size: self.size(),
                align: self.align(),
                required_size: info.workspace_size,
                required_align: info.workspace_align,
            });
        }
        Ok(())
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("size", &self.size())
            .field("align", &self.align())
            .finish()
    }
}

/// A loaded model library.
///
/// `Model` is `Send + Sync`: generated libraries keep no mutable global
/// state, so runs with distinct workspaces may proceed concurrently.
pub struct Model {
    run_fn: abi::nnc_run_fn,
    info: ModelInfo,
    path: PathBuf,
    /// Keeps the code behind `run_fn` mapped (a dlopen'd library, or the
    /// executable memory of a JIT-compiled model); dropped last.
    _code: Box<dyn std::any::Any + Send + Sync>,
}

impl Model {
    /// Loads a library produced by nnc and reads its signature.
    ///
    /// Loading runs the library's initializers, so only load files you
    /// trust, exactly as with any shared library.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref().to_path_buf();
        // dlopen searches the system library path for names without a
        // slash, which would never find `model.so` in the current directory.
        let lookup = if path.is_relative() && path.components().count() == 1 {
            Path::new(".").join(&path)
        } else {
            path.clone()
        };
        let Some(lookup) = lookup.to_str() else {
            return Err(Error::NonUtf8Path { path });
        };
        // SAFETY: loading a library runs its initializers; generated
        // libraries have none beyond the C runtime's, and the caller chose
        // the file (see the doc comment).
        let lib = match unsafe { libloading::Library::new(lookup) } {
            Ok(lib) => lib,
            Err(error) => return Err(Error::Load { path, error }),
        };
        let missing = |symbol, error| Error::MissingSymbol {
            path: path.clone(),
            symbol,
            error,
        };
        // SAFETY: the ABI fixes the types of these two symbols, and the fn
        // pointers are only used while `lib` is alive (it lives in `Model`).
        let (info_fn, run_fn) = unsafe {
            let info_fn = *lib
                .get::<abi::nnc_info_fn>(INFO_SYMBOL)
                .map_err(|e| missing(INFO_SYMBOL, e))?;
            let run_fn = *lib
                .get::<abi::nnc_run_fn>(RUN_SYMBOL)
                .map_err(|e| missing(RUN_SYMBOL, e))?;
            (info_fn, run_fn)
        };
        // SAFETY: the info function takes nothing and returns static data
        // laid out as the ABI says; `from_raw` validates it.
        let info = unsafe { ModelInfo::from_raw(info_fn()) }?;
        Ok(Model {
            run_fn,
            info,
            path,
            _code: Box::new(lib),
        })
    }

    /// Wraps entry points that live in memory owned by `code` (how the JIT
    /// hands out its models, so JIT and .so models are one type).
    ///
    /// # Safety
    /// `info_fn` and `run_fn` must follow the nnc ABI and stay valid for as
    /// long as `code` is alive.
    pub unsafe fn from_entry_points(
        info_fn: abi::nnc_info_fn,
        run_fn: abi::nnc_run_fn,
        label: impl Into<PathBuf>,
        code: Box<dyn std::any::Any + Send + Sync>,
    ) -> Result<Model> {
        // SAFETY: guaranteed by the caller.
        let info = unsafe { ModelInfo::from_raw(info_fn()) }?;
        Ok(Model {
            run_fn,
            info,
            path: label.into(),
            _code: code,
        })
    }

    /// The model's signature and resource needs.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The path the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A workspace sized and aligned for this model, to reuse across runs.
    pub fn new_workspace(&self) -> Result<Workspace> {
        Workspace::new(self.info.workspace_size, self.info.workspace_align)
    }

    /// Runs the model once, single-threaded, with a fresh workspace.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut ws = self.new_workspace()?;
        self.run_with(inputs, &mut ws, None)
    }

    /// Runs the model with a reusable workspace and optionally a thread
    /// pool, returning freshly allocated outputs in graph order.
    pub fn run_with(
        &self,
        inputs: &[Tensor],
        workspace: &mut Workspace,
        threads: Option<&ThreadPool>,
    ) -> Result<Vec<Tensor>> {
        let mut outputs = self
            .info
            .outputs
            .iter()
            .map(TensorInfo::zeros)
            .collect::<Result<Vec<_>>>()?;
        self.run_into(inputs, &mut outputs, workspace, threads)?;
        Ok(outputs)
    }

    /// Runs the model writing into caller-provided outputs, so a serving
    /// loop can run without allocating at all. Outputs must match the
    /// model's signature exactly; on failure their contents are unspecified.
    pub fn run_into(
        &self,
        inputs: &[Tensor],
        outputs: &mut [Tensor],
        workspace: &mut Workspace,
        threads: Option<&ThreadPool>,
    ) -> Result<()> {
        self.check_inputs(inputs)?;
        self.check_outputs(outputs)?;
        workspace.fits(&self.info)?;
        let in_ptrs: Vec<*const c_void> = inputs.iter().map(Tensor::as_ptr).collect();
        let out_ptrs: Vec<*mut c_void> = outputs.iter_mut().map(Tensor::as_mut_ptr).collect();
        let nnc_threads = threads.map(ThreadPool::as_nnc_threads);
        let threads_ptr = nnc_threads
            .as_ref()
            .map_or(ptr::null(), |t| t as *const abi::nnc_threads);
        // SAFETY: every buffer was checked against the signature the library
        // reported (count, dtype, shape, hence byte size); outputs are
        // distinct `&mut` tensors; the workspace is large and aligned enough
        // and exclusively ours; the pool outlives the call.
        let code = unsafe {
            (self.run_fn)(
                in_ptrs.as_ptr(),
                out_ptrs.as_ptr(),
                workspace.ptr.as_ptr().cast(),
                threads_ptr,
            )
        };
        if code != 0 {
            return Err(Error::Run { code });
        }
        Ok(())
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        let expected = &self.info.inputs;
        if inputs.len() != expected.len() {
            return Err(Error::InputCount {
                expected: expected.len(),
                got: inputs.len(),
            });
        }
        for (t, want) in inputs.iter().zip(expected) {
            if t.dtype() != want.dtype {
                return Err(Error::InputDtype {
                    name: want.name.clone(),
                    expected: want.dtype,
                    got: t.dtype(),
                });
            }
            if t.shape() != want.shape.as_slice() {
                return Err(Error::InputShape {
                    name: want.name.clone(),
                    expected: want.shape.clone(),
                    got: t.shape().to_vec(),
                });
            }
        }
        Ok(())
    }

    fn check_outputs(&self, outputs: &[Tensor]) -> Result<()> {
        let expected = &self.info.outputs;
        if outputs.len() != expected.len() {
            return Err(Error::OutputCount {
                expected: expected.len(),
                got: outputs.len(),
            });
        }
        for (t, want) in outputs.iter().zip(expected) {
            if t.dtype() != want.dtype {
                return Err(Error::OutputDtype {
                    name: want.name.clone(),
                    expected: want.dtype,
                    got: t.dtype(),
                });
            }
            if t.shape() != want.shape.as_slice() {
                return Err(Error::OutputShape {
                    name: want.name.clone(),
                    expected: want.shape.clone(),
                    got: t.shape().to_vec(),
                });
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_and_workspace_are_send_sync() {
        assert_send_sync::<Model>();
        assert_send_sync::<Workspace>();
        assert_send_sync::<ThreadPool>();
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nnc-runtime-{}-{name}", std::process::id()))
    }

    #[test]
    fn load_missing_file() {
        let path = temp_path("does-not-exist.so");
        match Model::load(&path) {
            Err(e @ Error::Load { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("does-not-exist.so"), "{msg}");
            }
            other => panic!("expected Error::Load, got {other:?}"),
        }
    }

    #[test]
    fn load_non_library() {
        let path = temp_path("garbage.so");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"this is not an ELF file\n").unwrap();
        drop(f);
        let r = Model::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(r, Err(Error::Load { .. })), "{r:?}");
    }

    #[test]
    fn workspace_alignment() {
        for align in [64, 128, 4096] {
            let ws = Workspace::new(1000, align).unwrap();
            assert_eq!(ws.ptr.as_ptr() as usize % align, 0);
            assert_eq!(ws.size(), 1000);
            assert_eq!(ws.align(), align);
        }
        // Zero-sized workspaces still get a real, aligned pointer.
        let ws = Workspace::new(0, 64).unwrap();
        assert_eq!(ws.ptr.as_ptr() as usize % 64, 0);
        // A bad alignment is an error, not a panic.
        assert!(matches!(Workspace::new(8, 48), Err(Error::Alloc { .. })));
        assert!(matches!(
            Workspace::new(usize::MAX, 64),
            Err(Error::Alloc { .. })
        ));
    }
}
