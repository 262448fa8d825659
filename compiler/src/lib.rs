//! nnc: an ahead-of-time compiler from ONNX models to native shared libraries.
//!
//! Pipeline stages, one module each: [`ir`] (the typed tensor graph) →
//! [`pipeline`] (legalize, support check) → [`lower`] (memory plan and
//! kernel order) → [`codegen`] (Cranelift, shared by the object writer and
//! the JIT) → [`artifact`] (object file, link, C header) or [`jit`].

pub mod artifact;
pub mod codegen;
pub mod ir;
pub mod jit;
pub mod lower;
pub mod opt;
pub mod pipeline;
