//! Kernel builder: a thin layer over Cranelift's `FunctionBuilder` with the
//! few idioms every kernel needs — static-trip-count loops, f32x4 vectors,
//! address arithmetic — so kernel files read like the loops they emit.

use super::parallel::Env;
use super::x86::backend::GemmBackend;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

/// The vector type every kernel uses: 128-bit is what Cranelift lowers on
/// x86-64 and the full NEON width on AArch64.
pub const VF: Type = F32X4;
pub const LANES: usize = 4;
pub const PTR: Type = I64;

pub struct Kb<'a> {
    pub b: FunctionBuilder<'a>,
    /// Use fused multiply-add instructions (else mul + add, which never
    /// turns into a libm call).
    pub has_fma: bool,
    /// The module being built: assembled x86-64 GEMMs (`gemm::emit` calls
    /// them when present) and task functions for `parallel`.
    pub env: Option<&'a mut dyn Env>,
    /// The kernel's `const nnc_threads *` argument (may be NULL at run
    /// time); None inside task functions and wherever nothing may split.
    pub threads: Option<Value>,
    mf: MemFlagsData,
}

impl<'a> Kb<'a> {
    pub fn new(b: FunctionBuilder<'a>, has_fma: bool) -> Self {
        // Buffers never trap (the plan guarantees it) but element offsets
        // are not 16-byte aligned, so no `aligned` flag.
        Kb {
            b,
            has_fma,
            env: None,
            threads: None,
            mf: MemFlagsData::new().with_notrap(),
        }
    }

    /// Attaches the module (assembled GEMMs, task functions).
    pub fn with_env(mut self, env: Option<&'a mut dyn Env>) -> Self {
        self.env = env;
        self
    }

    /// Lets the kernel split work over `threads` (a pointer value).
    pub fn with_threads(mut self, threads: Option<Value>) -> Self {
        self.threads = threads;
        self
    }

    /// The assembled-GEMM backend, if the target has one.
    pub fn asm(&mut self) -> Option<&mut dyn GemmBackend> {
        self.env.as_deref_mut().and_then(|e| e.gemm())
    }

    /// Flags of every kernel memory access.
    pub fn mf(&self) -> MemFlagsData {
        self.mf
    }

    pub fn iconst(&mut self, x: i64) -> Value {
        self.b.ins().iconst(I64, x)
    }

    pub fn fconst(&mut self, x: f32) -> Value {
        self.b.ins().f32const(x)
    }

    /// A constant of type `ty` (F32 or F32X4).
    pub fn cst(&mut self, ty: Type, x: f32) -> Value {
        let s = self.fconst(x);
        if ty == F32 {
            s
        } else {
            self.b.ins().splat(ty, s)
        }
    }

    pub fn splat(&mut self, s: Value) -> Value {
        self.b.ins().splat(VF, s)
    }

    /// `p + bytes`.
    pub fn offset(&mut self, p: Value, bytes: i64) -> Value {
        if bytes == 0 {
            p
        } else {
            self.b.ins().iadd_imm_s(p, bytes)
        }
    }

    /// `p + i * scale` (i is an i64 element index).
    pub fn index(&mut self, p: Value, i: Value, scale: i64) -> Value {
        if scale == 0 {
            return p;
        }
        let off = if scale == 1 {
            i
        } else {
            self.b.ins().imul_imm_s(i, scale)
        };
        self.b.ins().iadd(p, off)
    }

    pub fn load(&mut self, ty: Type, p: Value, off: i64) -> Value {
        if let Ok(o) = i32::try_from(off) {
            self.b.ins().load(ty, self.mf, p, o)
        } else {
            let q = self.offset(p, off);
            self.b.ins().load(ty, self.mf, q, 0)
        }
    }

    pub fn store(&mut self, v: Value, p: Value, off: i64) {
        if let Ok(o) = i32::try_from(off) {
            self.b.ins().store(self.mf, v, p, o);
        } else {
            let q = self.offset(p, off);
            self.b.ins().store(self.mf, v, q, 0);
        }
    }

    /// f32 element `i` (element index value) of `p`, as a scalar or a vector.
    pub fn load_at(&mut self, ty: Type, p: Value, i: Value) -> Value {
        let q = self.index(p, i, 4);
        self.load(ty, q, 0)
    }

    pub fn store_at(&mut self, v: Value, p: Value, i: Value) {
        let q = self.index(p, i, 4);
        self.store(v, q, 0);
    }

    /// `a * b + c`.
    pub fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.has_fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }

    pub fn var(&mut self, ty: Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    pub fn get(&mut self, v: Variable) -> Value {
        self.b.use_var(v)
    }

    pub fn set(&mut self, v: Variable, x: Value) {
        self.b.def_var(v, x)
    }

    /// `for i in (start..end).step_by(step)` with bounds known at compile
    /// time; a single iteration is emitted inline with a constant index.
    pub fn for_range(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        mut f: impl FnMut(&mut Self, Value),
    ) {
        if end <= start {
            return;
        }
        if end - start <= step {
            let i = self.iconst(start);
            f(self, i);
            return;
        }
        let s = self.iconst(start);
        let e = self.iconst(end);
        self.emit_loop(s, e, step, true, &mut f);
    }

    /// Like [`Kb::for_range`] with bounds computed at run time (may be empty).
    pub fn for_dyn(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        mut f: impl FnMut(&mut Self, Value),
    ) {
        self.emit_loop(start, end, step, false, &mut f);
    }

    fn emit_loop(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        nonempty: bool,
        f: &mut dyn FnMut(&mut Self, Value),
    ) {
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(body, I64);
        if nonempty {
            self.b.ins().jump(body, &[start.into()]);
        } else {
            let c = self.b.ins().icmp(IntCC::SignedLessThan, start, end);
            self.b.ins().brif(c, body, &[start.into()], exit, &[]);
        }
        self.b.switch_to_block(body);
        let i = self.b.block_params(body)[0];
        f(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, next, end);
        self.b.ins().brif(c, body, &[next.into()], exit, &[]);
        self.b.seal_block(body);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// Visits `0..n` as f32x4 chunks then a scalar tail: `f(i, ty)` with
    /// `ty` = F32X4 or F32.
    pub fn for_lanes(&mut self, n: usize, mut f: impl FnMut(&mut Self, Value, Type)) {
        let n4 = (n / LANES * LANES) as i64;
        self.for_range(0, n4, LANES as i64, |k, i| f(k, i, VF));
        self.for_range(n4, n as i64, 1, |k, i| f(k, i, F32));
    }

    /// Horizontal reduction of a vector to a scalar with `op`.
    pub fn hreduce(&mut self, v: Value, op: fn(&mut Self, Value, Value) -> Value) -> Value {
        let l0 = self.b.ins().extractlane(v, 0);
        let l1 = self.b.ins().extractlane(v, 1);
        let l2 = self.b.ins().extractlane(v, 2);
        let l3 = self.b.ins().extractlane(v, 3);
        let a = op(self, l0, l1);
        let c = op(self, l2, l3);
        op(self, a, c)
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    pub fn max(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmax(a, b)
    }
    pub fn min(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmin(a, b)
    }

    /// `cond ? a : b` for float compare `cc` on `x, y` (scalar or vector).
    pub fn select_cmp(&mut self, cc: FloatCC, x: Value, y: Value, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let c = self.b.ins().fcmp(cc, x, y);
        if ty == F32 {
            self.b.ins().select(c, a, b)
        } else {
            let m = self.b.ins().bitcast(VF, MemFlagsData::new(), c);
            self.b.ins().bitselect(m, a, b)
        }
    }

    /// Reinterprets f32 lanes as i32 lanes (and back).
    pub fn as_int(&mut self, x: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let to = if ty == F32 { I32 } else { I32X4 };
        self.b.ins().bitcast(to, MemFlagsData::new(), x)
    }
    pub fn as_float(&mut self, x: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let to = if ty == I32 { F32 } else { VF };
        self.b.ins().bitcast(to, MemFlagsData::new(), x)
    }

    /// Lanes `idx` of two f32x4 vectors (0..4 from `a`, 4..8 from `b`):
    /// a byte shuffle, which x86-64 lowers to `shufps`/`unpck*ps` and
    /// AArch64 to `uzp`/`zip`/`tbl`.
    pub fn shuffle4(&mut self, a: Value, b: Value, idx: [u8; 4]) -> Value {
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let ai = self.b.ins().bitcast(I8X16, le, a);
        let bi = self.b.ins().bitcast(I8X16, le, b);
        let bytes: Vec<u8> = idx
            .iter()
            .flat_map(|&l| (0..4).map(move |j| 4 * l + j))
            .collect();
        let imm = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
        let r = self.b.ins().shuffle(ai, bi, imm);
        self.b.ins().bitcast(VF, le, r)
    }

    pub fn ty(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }
}

impl Kb<'_> {
    /// `i·mul + add` on i64 values (index arithmetic).
    pub fn b_ins_imul_add(&mut self, i: Value, mul: i64, add: i64) -> Value {
        let m = if mul == 1 {
            i
        } else {
            self.b.ins().imul_imm_s(i, mul)
        };
        if add == 0 {
            m
        } else {
            self.b.ins().iadd_imm_s(m, add)
        }
    }
}

/// Small integer helpers on the builder.
pub trait InsExt {
    fn ins_urem(&mut self, x: Value, m: i64) -> Value;
}

impl InsExt for FunctionBuilder<'_> {
    fn ins_urem(&mut self, x: Value, m: i64) -> Value {
        if m == 1 {
            self.ins().iconst(I64, 0)
        } else {
            self.ins().urem_imm_u(x, m)
        }
    }
}

impl Kb<'_> {
    /// `if cond { then } else { other }`, continuing after both.
    pub fn if_else(
        &mut self,
        cond: Value,
        then: impl FnOnce(&mut Self),
        other: impl FnOnce(&mut Self),
    ) {
        let t = self.b.create_block();
        let e = self.b.create_block();
        let join = self.b.create_block();
        self.b.ins().brif(cond, t, &[], e, &[]);
        self.b.switch_to_block(t);
        self.b.seal_block(t);
        then(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(e);
        self.b.seal_block(e);
        other(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
    }

    /// A run-time i64 index into an axis of `dim` elements: negatives wrap
    /// once (numpy `take`); out of range sets `status` to the ABI's
    /// index error and skips `body`, which gets the wrapped index.
    pub fn checked_index(
        &mut self,
        raw: Value,
        dim: i64,
        status: Variable,
        body: impl FnOnce(&mut Self, Value),
    ) {
        let wrapped = self.b.ins().iadd_imm_s(raw, dim);
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, raw, 0);
        let i = self.b.ins().select(neg, wrapped, raw);
        let lo = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, 0);
        let hi = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, dim);
        let bad = self.b.ins().bor(lo, hi);
        self.if_else(
            bad,
            |k| {
                let code = k.b.ins().iconst(I32, super::status::INDEX_OUT_OF_RANGE);
                k.set(status, code);
            },
            |k| body(k, i),
        );
    }
}
