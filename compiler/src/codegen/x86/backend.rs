//! The seam between Cranelift kernels and the assembled GEMMs.
//!
//! A kernel that wants a GEMM asks the [`GemmBackend`] for the function of
//! its spec (assembled and defined in the module on first use, shared by
//! every call site with the same spec) and, for constant B, for a data
//! object with the pre-packed panels; then it emits an ordinary `call`.
//! Kernels are not generic over the module, hence the trait object.

use super::{AsmGemm, Level};
use cranelift_codegen::ir::{self, AbiParam, Signature};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use std::collections::HashMap;

pub trait GemmBackend {
    fn level(&self) -> Level;
    /// The function `void f(A, B, C, bias)` computing `spec`; None if it
    /// cannot be assembled (the caller falls back to Cranelift code).
    fn gemm(&mut self, spec: &AsmGemm) -> Option<(FuncId, Signature)>;
    /// Another assembled function with the same four-argument signature
    /// (e.g. an im2col), made by `make` on first use of `key`.
    fn raw(
        &mut self,
        key: &str,
        make: &mut dyn FnMut() -> Option<Vec<u8>>,
    ) -> Option<(FuncId, Signature)>;
    /// Read-only, 64-byte aligned data object `key`, made by `make` on first use.
    fn data(&mut self, key: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Option<DataId>;
}

/// What one model has defined so far (kept across its kernels).
#[derive(Default)]
pub struct AsmState {
    funcs: HashMap<String, FuncId>,
    datas: HashMap<String, DataId>,
}

/// [`GemmBackend`] over a `cranelift_module::Module` (object or JIT).
/// `level` None: the target has no assembled GEMMs (the module is still
/// used for task functions, see `parallel::ModuleEnv`).
pub struct ModuleBackend<'a, M: Module> {
    pub module: &'a mut M,
    pub state: &'a mut AsmState,
    pub prefix: &'a str,
    pub level: Option<Level>,
}

impl<M: Module> ModuleBackend<'_, M> {
    fn signature(&self) -> Signature {
        let mut sig = self.module.make_signature();
        for _ in 0..4 {
            sig.params.push(AbiParam::new(ir::types::I64));
        }
        sig
    }
}

impl<M: Module> GemmBackend for ModuleBackend<'_, M> {
    fn level(&self) -> Level {
        self.level.expect("asm backend used without a level")
    }

    fn gemm(&mut self, spec: &AsmGemm) -> Option<(FuncId, Signature)> {
        let level = self.level?;
        let sig = self.signature();
        // Debug of f32 round-trips, so equal keys mean equal specs.
        let key = format!("{level:?} {spec:?}");
        if let Some(&id) = self.state.funcs.get(&key) {
            return Some((id, sig));
        }
        let bytes = super::assemble(spec, level).ok()?;
        let name = format!("{}__gemm{}", self.prefix, self.state.funcs.len());
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .ok()?;
        self.module
            .define_function_bytes(id, 64, &bytes, &[])
            .ok()?;
        if std::env::var_os("NNC_DUMP_ASM_GEMM").is_some() {
            let t = super::tiling(spec, level);
            eprintln!("{name}: {spec:?} {t:?} ({} bytes)", bytes.len());
        }
        self.state.funcs.insert(key, id);
        Some((id, sig))
    }

    fn raw(
        &mut self,
        key: &str,
        make: &mut dyn FnMut() -> Option<Vec<u8>>,
    ) -> Option<(FuncId, Signature)> {
        self.level?;
        let sig = self.signature();
        let key = format!("raw {key}");
        if let Some(&id) = self.state.funcs.get(&key) {
            return Some((id, sig));
        }
        let bytes = make()?;
        let name = format!("{}__asm{}", self.prefix, self.state.funcs.len());
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .ok()?;
        self.module
            .define_function_bytes(id, 64, &bytes, &[])
            .ok()?;
        self.state.funcs.insert(key, id);
        Some((id, sig))
    }

    fn data(&mut self, key: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Option<DataId> {
        if let Some(&id) = self.state.datas.get(key) {
            return Some(id);
        }
        let name = format!("{}__gemmdata{}", self.prefix, self.state.datas.len());
        let id = self
            .module
            .declare_data(&name, Linkage::Local, false, false)
            .ok()?;
        let mut bytes = make();
        if bytes.is_empty() {
            bytes.push(0);
        }
        let mut d = DataDescription::new();
        d.define(bytes.into_boxed_slice());
        d.set_align(64);
        self.module.define_data(id, &d).ok()?;
        self.state.datas.insert(key.to_string(), id);
        Some(id)
    }
}

/// `Module::declare_func_in_func` for a local function, without the module.
pub fn import_function(func: &mut ir::Function, id: FuncId, sig: Signature) -> ir::FuncRef {
    let signature = func.import_signature(sig);
    let name = func.declare_imported_user_function(ir::UserExternalName {
        namespace: 0,
        index: id.as_u32(),
    });
    func.import_function(ir::ExtFuncData {
        name: ir::ExternalName::user(name),
        signature,
        colocated: true,
        patchable: false,
    })
}

/// `Module::declare_data_in_func` for local data, without the module.
pub fn import_data(func: &mut ir::Function, id: DataId) -> ir::GlobalValue {
    let name = func.declare_imported_user_function(ir::UserExternalName {
        namespace: 1,
        index: id.as_u32(),
    });
    func.create_global_value(ir::GlobalValueData::Symbol {
        name: ir::ExternalName::user(name),
        offset: ir::immediates::Imm64::new(0),
        colocated: true,
        tls: false,
    })
}
