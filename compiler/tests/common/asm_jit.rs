//! Executable copy of one assembled x86 function, shared by the tests of
//! the assembled kernels (`x86_gemm.rs`, `x86_softmax.rs`): the bytes go
//! into a `JITModule` with `define_function_bytes`, as in generated models.

use cranelift_codegen::ir::{types, AbiParam};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

/// The function as `F` (an `extern "C" fn` of four pointers); freed on drop.
pub struct Jit<F: Copy> {
    module: Option<JITModule>,
    pub f: F,
}

impl<F: Copy> Drop for Jit<F> {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `f` is not used after drop.
            unsafe { m.free_memory() };
        }
    }
}

/// Places `bytes` (a SysV function of four pointer arguments) in executable
/// memory. `F` must be a function-pointer type with that signature.
pub fn jit<F: Copy>(bytes: &[u8]) -> Jit<F> {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*const u8>());
    let mut flags = settings::builder();
    flags.set("is_pic", "false").unwrap();
    let isa = cranelift_native::builder()
        .unwrap()
        .finish(settings::Flags::new(flags))
        .unwrap();
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut sig = module.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(types::I64));
    }
    let id = module
        .declare_function("asm_kernel", Linkage::Local, &sig)
        .unwrap();
    module.define_function_bytes(id, 64, bytes, &[]).unwrap();
    module.finalize_definitions().unwrap();
    let p = module.get_finalized_function(id);
    // SAFETY: F is a pointer-sized fn type matching the four-pointer ABI.
    let f = unsafe { std::mem::transmute_copy::<*const u8, F>(&p) };
    Jit {
        module: Some(module),
        f,
    }
}
