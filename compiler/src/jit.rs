//! In-memory compilation with cranelift-jit: the same `define_model` as the
//! AOT path, so JIT and .so results agree bit for bit.

use crate::codegen::x86::Level;
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
        JitModel::compile_capped(g, plan, Some(Level::Avx512))
    }

    /// [`JitModel::compile`] with the assembled x86-64 kernels capped at
    /// `cap` (None: none at all, Cranelift code only, as on targets
    /// without them): tests of the portable paths on any host, without
    /// the process-global `NNC_ASM_GEMM`.
    pub fn compile_capped(g: &Graph, plan: &Plan, cap: Option<Level>) -> Result<JitModel, String> {
        let t = target::build(&target::host_triple(), target::Cpu::Native, false)?;
        let has_fma = t.has_fma;
        let gemm_level = match (t.gemm_level, cap) {
            (Some(Level::Avx512), Some(Level::Avx2Fma)) => Some(Level::Avx2Fma),
            (l, Some(_)) => l,
            (_, None) => None,
        };
        let mut builder = JITBuilder::with_isa(t.isa, cranelift_module::default_libcall_names());
        #[cfg(target_os = "linux")]
        builder.memory_provider(Box::new(huge::Provider::new()));
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

/// Read-only data (weights, pre-packed GEMM panels: tens of MB) packed into
/// 2 MiB-aligned chunks advised MADV_HUGEPAGE. The kernel maps a .so's
/// read-only segment from the page cache with 2 MiB pages, while
/// cranelift-jit's default provider gives each large object its own mmap of
/// 4 KiB pages (THP is usually `madvise`-only): ResNet-18 and the BERT layer
/// ran 2-4% slower from the JIT for that alone. Code and writable data stay
/// with the default provider (code on huge pages measured no gain).
#[cfg(target_os = "linux")]
mod huge {
    use cranelift_jit::{BranchProtection, JITMemoryKind, JITMemoryProvider, SystemMemoryProvider};
    use cranelift_module::{ModuleError, ModuleResult};
    use std::io;

    const HUGE: usize = 2 << 20;
    /// The first chunk's size; each next one doubles (or fits the object), so
    /// a model's data takes a few chunks. Untouched address space costs
    /// nothing (MAP_NORESERVE, faulted per huge page).
    const FIRST: usize = 16 << 20;

    struct Chunk {
        ptr: *mut u8,
        len: usize,
        used: usize,
        sealed: bool,
    }

    pub(super) struct Provider {
        inner: SystemMemoryProvider,
        chunks: Vec<Chunk>,
    }

    impl Provider {
        pub(super) fn new() -> Provider {
            Provider {
                inner: SystemMemoryProvider::new(),
                chunks: Vec::new(),
            }
        }
    }

    // SAFETY: the chunks are plain mappings owned by this provider.
    unsafe impl Send for Provider {}

    /// A `len`-byte mapping aligned to `HUGE`, advised MADV_HUGEPAGE.
    fn map(len: usize) -> io::Result<*mut u8> {
        let total = len + HUGE;
        // SAFETY: a fresh anonymous mapping; the unaligned ends are unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let base = p as usize;
            let start = base.next_multiple_of(HUGE);
            let head = start - base;
            if head > 0 {
                libc::munmap(p, head);
            }
            if total - head > len {
                libc::munmap((start + len) as *mut libc::c_void, total - head - len);
            }
            // Advice only: without THP this is ordinary memory.
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            Ok(start as *mut u8)
        }
    }

    impl JITMemoryProvider for Provider {
        fn allocate(
            &mut self,
            size: usize,
            align: u64,
            kind: JITMemoryKind,
        ) -> io::Result<*mut u8> {
            let align = usize::try_from(align).unwrap_or(usize::MAX).max(1);
            if !matches!(kind, JITMemoryKind::ReadOnly) || align > HUGE {
                return self.inner.allocate(size, align as u64, kind);
            }
            if let Some(c) = self.chunks.last_mut().filter(|c| !c.sealed) {
                let at = c.used.next_multiple_of(align);
                if at + size <= c.len {
                    c.used = at + size;
                    // SAFETY: within the chunk.
                    return Ok(unsafe { c.ptr.add(at) });
                }
            }
            let next = self.chunks.last().map_or(FIRST, |c| 2 * c.len);
            let len = size.max(next).next_multiple_of(HUGE);
            let ptr = map(len)?;
            self.chunks.push(Chunk {
                ptr,
                len,
                used: size,
                sealed: false,
            });
            Ok(ptr)
        }

        unsafe fn free_memory(&mut self) {
            for c in self.chunks.drain(..) {
                // SAFETY: mapped by `map` with this length; the caller
                // guarantees nothing uses it any more.
                unsafe { libc::munmap(c.ptr.cast(), c.len) };
            }
            // SAFETY: forwarded under the caller's guarantee.
            unsafe { self.inner.free_memory() };
        }

        fn finalize(&mut self, branch_protection: BranchProtection) -> ModuleResult<()> {
            for c in self.chunks.iter_mut().filter(|c| !c.sealed) {
                // SAFETY: the whole chunk is our mapping.
                if unsafe { libc::mprotect(c.ptr.cast(), c.len, libc::PROT_READ) } != 0 {
                    return Err(ModuleError::Allocation {
                        err: io::Error::last_os_error(),
                    });
                }
                c.sealed = true;
            }
            self.inner.finalize(branch_protection)
        }
    }
}
