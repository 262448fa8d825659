//! Vectorized elementwise math. Cranelift has no libm, so exp, log, tanh and
//! erf are polynomial/rational approximations evaluated on f32x4; scalar
//! callers run the same vector code on a splat and take lane 0, so both paths
//! give bit-identical results. Accuracy is checked against f64 in the tests.

use super::kb::{Kb, VF};
use crate::ir::{BinaryOp, UnaryOp};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, I32X4};
use cranelift_codegen::ir::{InstBuilder, Value};

/// Polynomial `c[0] + c[1]·x + …` by Horner's rule.
fn poly(k: &mut Kb, x: Value, c: &[f32]) -> Value {
    let mut acc = k.cst(VF, c[c.len() - 1]);
    for &ci in c[..c.len() - 1].iter().rev() {
        let cv = k.cst(VF, ci);
        acc = k.fma(acc, x, cv);
    }
    acc
}

/// exp(x): round-to-nearest range reduction by ln 2 and a degree-6 minimax
/// polynomial (Cephes coefficients); exact 0 below the denormal range and
/// +inf above f32 max, NaN propagates.
pub fn exp(k: &mut Kb, x: Value) -> Value {
    let lo = k.cst(VF, -87.336_55);
    // Clamp at ln(f32::MAX), not lower: clamping at 88 made exp(x) for
    // x ∈ (88, 88.72] return exp(88) (up to 2× too small). n then reaches
    // 128, so 2^n is applied in two halves below (2^128 is not an f32).
    let hi = k.cst(VF, 88.722_83);
    let xc = k.max(x, lo);
    let xc = k.min(xc, hi);
    let log2e = k.cst(VF, std::f32::consts::LOG2_E);
    let t = k.mul(xc, log2e);
    let n = k.b.ins().nearest(t);
    let ln2_hi = k.cst(VF, -0.693_359_4);
    let ln2_lo = k.cst(VF, 2.121_944_4e-4);
    let r = k.fma(n, ln2_hi, xc);
    let r = k.fma(n, ln2_lo, r);
    let p = poly(
        k,
        r,
        &[
            5e-1, // Cephes 5.0000001e-1, the same f32
            1.666_666_5e-1,
            4.166_579_6e-2,
            8.333_452e-3,
            1.398_199_9e-3,
            1.987_569_1e-4,
        ],
    );
    let r2 = k.mul(r, r);
    let one = k.cst(VF, 1.0);
    let pr = k.add(r, one);
    let mut y = k.fma(p, r2, pr);
    let ni = k.b.ins().fcvt_to_sint_sat(I32X4, n);
    // y·2^n as y·2^(n>>1)·2^(n−(n>>1)): both factors stay normal for
    // n ∈ [−126, 128], and scaling by a power of two is exact.
    let n1 = k.b.ins().sshr_imm_u(ni, 1);
    let n2 = k.b.ins().isub(ni, n1);
    let bias = k.b.ins().iconst(cranelift_codegen::ir::types::I32, 127);
    let bias = k.b.ins().splat(I32X4, bias);
    for half in [n1, n2] {
        let e = k.b.ins().iadd(half, bias);
        let e = k.b.ins().ishl_imm_u(e, 23);
        let scale = k.as_float(e);
        y = k.mul(y, scale);
    }
    let zero = k.cst(VF, 0.0);
    let y = k.select_cmp(FloatCC::LessThan, x, lo, zero, y);
    let inf = k.cst(VF, f32::INFINITY);
    let big = k.cst(VF, 88.722_83);
    k.select_cmp(FloatCC::GreaterThan, x, big, inf, y)
}

/// Natural log: split into mantissa m ∈ [√½, √2) and exponent, then a
/// degree-9 polynomial in m−1 (Cephes logf). log(0) = −inf, log(<0) = NaN.
pub fn log(k: &mut Kb, x: Value) -> Value {
    let min_norm = k.cst(VF, f32::MIN_POSITIVE);
    // Denormals: scale by 2^23 into the normal range, subtract 23·ln 2 at the end.
    let two23 = k.cst(VF, 8_388_608.0);
    let xs = k.mul(x, two23);
    let x_in = x;
    let x = k.select_cmp(FloatCC::LessThan, x_in, min_norm, xs, x_in);
    let xc = k.max(x, min_norm);
    let bits = k.as_int(xc);
    let e = k.b.ins().ushr_imm_u(bits, 23);
    let c126 = k.b.ins().iconst(cranelift_codegen::ir::types::I32, 126);
    let c126 = k.b.ins().splat(I32X4, c126);
    let e = k.b.ins().isub(e, c126);
    let mant_mask =
        k.b.ins()
            .iconst(cranelift_codegen::ir::types::I32, 0x007f_ffff);
    let mant_mask = k.b.ins().splat(I32X4, mant_mask);
    let half_bits =
        k.b.ins()
            .iconst(cranelift_codegen::ir::types::I32, 0x3f00_0000);
    let half_bits = k.b.ins().splat(I32X4, half_bits);
    let m = k.b.ins().band(bits, mant_mask);
    let m = k.b.ins().bor(m, half_bits);
    let m = k.as_float(m); // m in [0.5, 1), x = m·2^e
    let ef = k.b.ins().fcvt_from_sint(VF, e);
    let sqrthf = k.cst(VF, std::f32::consts::FRAC_1_SQRT_2);
    let one = k.cst(VF, 1.0);
    // if m < √½ { e -= 1; m = 2m − 1 } else { m = m − 1 }
    let m2 = k.add(m, m);
    let m2 = k.sub(m2, one);
    let m1 = k.sub(m, one);
    let ef1 = k.sub(ef, one);
    let ef = k.select_cmp(FloatCC::LessThan, m, sqrthf, ef1, ef);
    let m = k.select_cmp(FloatCC::LessThan, m, sqrthf, m2, m1);
    let z = k.mul(m, m);
    let p = poly(
        k,
        m,
        &[
            3.333_333e-1, // Cephes 3.3333331e-1, the same f32
            -2.499_999_4e-1,
            2.000_071_4e-1,
            -1.666_805_8e-1,
            1.424_932_3e-1,
            -1.242_014_1e-1,
            1.167_699_9e-1,
            -1.151_461e-1,
            7.037_683_6e-2,
        ],
    );
    let y = k.mul(p, m);
    let y = k.mul(y, z);
    let c1 = k.cst(VF, -2.121_944_4e-4);
    let y = k.fma(ef, c1, y);
    let mhalf = k.cst(VF, -0.5);
    let y = k.fma(z, mhalf, y);
    let r = k.add(m, y);
    let c2 = k.cst(VF, 0.693_359_4);
    let r = k.fma(ef, c2, r);
    // Undo the denormal scaling.
    let corr = k.cst(VF, 23.0 * std::f32::consts::LN_2);
    let rc = k.sub(r, corr);
    let r = k.select_cmp(FloatCC::LessThan, x_in, min_norm, rc, r);
    let x = x_in;
    // Special values.
    let zero = k.cst(VF, 0.0);
    let ninf = k.cst(VF, f32::NEG_INFINITY);
    let nan = k.cst(VF, f32::NAN);
    let inf = k.cst(VF, f32::INFINITY);
    let r = k.select_cmp(FloatCC::Equal, x, zero, ninf, r);
    let r = k.select_cmp(FloatCC::LessThan, x, zero, nan, r);
    let r = k.select_cmp(FloatCC::Equal, x, inf, inf, r);
    k.select_cmp(FloatCC::Unordered, x, x, x, r)
}

/// tanh: odd rational approximation on [−7.9, 7.9] (beyond it tanh rounds
/// to ±1 in f32); near zero returns x, which is exact to f32 precision.
pub fn tanh(k: &mut Kb, x: Value) -> Value {
    let lim = k.cst(VF, 7.905_311);
    let nlim = k.cst(VF, -7.905_311);
    let xc = k.min(x, lim);
    let xc = k.max(xc, nlim);
    let x2 = k.mul(xc, xc);
    let p = poly(
        k,
        x2,
        &[
            4.893_524_6e-3,
            6.372_619_3e-4,
            1.485_722_4e-5,
            5.122_297e-8,
            -8.604_672e-11,
            2.000_188e-13,
            -2.760_768_5e-16,
        ],
    );
    let p = k.mul(p, xc);
    let q = poly(
        k,
        x2,
        &[4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6],
    );
    let r = k.div(p, q);
    let ax = k.b.ins().fabs(x);
    let tiny = k.cst(VF, 4e-4);
    k.select_cmp(FloatCC::LessThan, ax, tiny, x, r)
}

/// erf: odd rational approximation clamped to [−4, 4]; exactly ±1 for
/// |x| ≥ 3.92, where the true erf rounds to ±1 in f32.
pub fn erf(k: &mut Kb, x: Value) -> Value {
    let lim = k.cst(VF, 4.0);
    let nlim = k.cst(VF, -4.0);
    let xc = k.min(x, lim);
    let xc = k.max(xc, nlim);
    let x2 = k.mul(xc, xc);
    let p = poly(
        k,
        x2,
        &[
            -1.609_603_3e-2,
            -2.954_6e-3, // -2.9545998e-3, the same f32
            -7.349_906_3e-4,
            -5.692_506_4e-5,
            -2.101_024e-6,
            2.770_681_4e-8,
            -2.726_142_3e-10,
        ],
    );
    let p = k.mul(p, xc);
    let q = poly(
        k,
        x2,
        &[
            -1.426_474e-2,
            -7.373_329e-3,
            -1.682_827e-3,
            -2.133_740_6e-4,
            -1.456_607_2e-5,
        ],
    );
    let r = k.div(p, q);
    // The rational function is ~2e-7 short of ±1 at the clamp, which made
    // gelu(x) = ½x(1 + erf(x/√2)) ≈ −1e-7·x for x ≪ 0 (e.g. −1e-3 at x = −1e4
    // instead of −0) and gelu(−inf) = −inf instead of NaN (−inf·0).
    // (Two selects: Cranelift has no vector fcopysign on x86-64.)
    let one = k.cst(VF, 1.0);
    let sat = k.cst(VF, 3.92);
    let r = k.select_cmp(FloatCC::GreaterThanOrEqual, x, sat, one, r);
    let mone = k.cst(VF, -1.0);
    let nsat = k.cst(VF, -3.92);
    k.select_cmp(FloatCC::LessThanOrEqual, x, nsat, mone, r)
}

pub fn sigmoid(k: &mut Kb, x: Value) -> Value {
    let nx = k.b.ins().fneg(x);
    let e = exp(k, nx);
    let one = k.cst(VF, 1.0);
    let d = k.add(one, e);
    k.div(one, d)
}

/// Applies `op` to `x` (F32 or F32X4). Transcendentals on scalars go
/// through the vector code (see module docs).
pub fn unary(k: &mut Kb, op: UnaryOp, x: Value) -> Value {
    let ty = k.ty(x);
    if ty == F32 && needs_vector_path(op) {
        let v = k.splat(x);
        let r = unary(k, op, v);
        return k.b.ins().extractlane(r, 0);
    }
    use UnaryOp::*;
    match op {
        Relu => {
            let z = k.cst(ty, 0.0);
            k.max(x, z)
        }
        Neg => k.b.ins().fneg(x),
        Abs => k.b.ins().fabs(x),
        Sqrt => k.b.ins().sqrt(x),
        Floor => k.b.ins().floor(x),
        Ceil => k.b.ins().ceil(x),
        Reciprocal => {
            let one = k.cst(ty, 1.0);
            k.div(one, x)
        }
        Exp => exp(k, x),
        Log => log(k, x),
        Tanh => tanh(k, x),
        Erf => erf(k, x),
        Sigmoid => sigmoid(k, x),
        Silu => {
            let s = sigmoid(k, x);
            k.mul(x, s)
        }
        Gelu => {
            let c = k.cst(ty, std::f32::consts::FRAC_1_SQRT_2);
            let t = k.mul(x, c);
            let e = erf(k, t);
            let one = k.cst(ty, 1.0);
            let e1 = k.add(e, one);
            let half = k.cst(ty, 0.5);
            let hx = k.mul(x, half);
            k.mul(hx, e1)
        }
        LeakyRelu { alpha } => {
            let a = k.cst(ty, alpha.get());
            let ax = k.mul(x, a);
            let z = k.cst(ty, 0.0);
            k.select_cmp(FloatCC::LessThan, x, z, ax, x)
        }
        Elu { alpha } => {
            let e = exp(k, x);
            let one = k.cst(ty, 1.0);
            let em1 = k.sub(e, one);
            let a = k.cst(ty, alpha.get());
            let neg = k.mul(em1, a);
            let z = k.cst(ty, 0.0);
            k.select_cmp(FloatCC::LessThan, x, z, neg, x)
        }
        Selu { alpha, gamma } => {
            let e = exp(k, x);
            let one = k.cst(ty, 1.0);
            let em1 = k.sub(e, one);
            let a = k.cst(ty, alpha.get());
            let neg = k.mul(em1, a);
            let z = k.cst(ty, 0.0);
            let r = k.select_cmp(FloatCC::LessThan, x, z, neg, x);
            let r = k.select_cmp(FloatCC::Equal, x, z, z, r);
            let g = k.cst(ty, gamma.get());
            k.mul(r, g)
        }
        HardSigmoid { alpha, beta } => {
            let a = k.cst(ty, alpha.get());
            let b = k.cst(ty, beta.get());
            let t = k.fma(x, a, b);
            clamp01(k, t)
        }
        HardSwish => {
            let a = k.cst(ty, 1.0 / 6.0);
            let b = k.cst(ty, 0.5);
            let t = k.fma(x, a, b);
            let t = clamp01(k, t);
            k.mul(x, t)
        }
        Clip { min, max } => {
            let lo = k.cst(ty, min.get());
            let hi = k.cst(ty, max.get());
            let t = k.max(x, lo);
            k.min(t, hi)
        }
        Round => k.b.ins().nearest(x),
        Sign => {
            let z = k.cst(ty, 0.0);
            let one = k.cst(ty, 1.0);
            let mone = k.cst(ty, -1.0);
            let r = k.select_cmp(FloatCC::GreaterThan, x, z, one, x);
            // ±0 and NaN fall through as themselves.
            k.select_cmp(FloatCC::LessThan, x, z, mone, r)
        }
        Not => unreachable!("bool ops are refused before codegen"),
    }
}

fn clamp01(k: &mut Kb, t: Value) -> Value {
    let ty = k.ty(t);
    let z = k.cst(ty, 0.0);
    let one = k.cst(ty, 1.0);
    let t = k.max(t, z);
    k.min(t, one)
}

fn needs_vector_path(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(
        op,
        Exp | Log | Tanh | Erf | Sigmoid | Silu | Gelu | Elu { .. } | Selu { .. }
    )
}

/// Applies a float binary op (F32 or F32X4 operands of the same type).
pub fn binary(k: &mut Kb, op: BinaryOp, a: Value, b: Value) -> Value {
    match op {
        BinaryOp::Add => k.add(a, b),
        BinaryOp::Sub => k.sub(a, b),
        BinaryOp::Mul => k.mul(a, b),
        BinaryOp::Div => k.div(a, b),
        BinaryOp::Max => k.max(a, b),
        BinaryOp::Min => k.min(a, b),
        BinaryOp::Pow => pow(k, a, b),
        _ => unreachable!("non-float binary ops are refused before codegen"),
    }
}

/// x^y = exp(y·log|x|), with the sign rules of C `powf` for negative x and
/// integer y, and NaN for negative x with non-integer y.
pub fn pow(k: &mut Kb, x: Value, y: Value) -> Value {
    if k.ty(x) == F32 {
        let xv = k.splat(x);
        let yv = k.splat(y);
        let r = pow(k, xv, yv);
        return k.b.ins().extractlane(r, 0);
    }
    let ax = k.b.ins().fabs(x);
    let l = log(k, ax);
    let t = k.mul(y, l);
    let r = exp(k, t);
    let fy = k.b.ins().floor(y);
    let half = k.cst(VF, 0.5);
    let hy = k.mul(y, half);
    let fhy = k.b.ins().floor(hy);
    let two = k.cst(VF, 2.0);
    let even = k.mul(fhy, two);
    let nr = k.b.ins().fneg(r);
    // odd integer y → −r, even → r, non-integer → NaN
    let signed = k.select_cmp(FloatCC::Equal, even, y, r, nr);
    let nan = k.cst(VF, f32::NAN);
    let neg_case = k.select_cmp(FloatCC::Equal, fy, y, signed, nan);
    let zero = k.cst(VF, 0.0);
    let r = k.select_cmp(FloatCC::LessThan, x, zero, neg_case, r);
    // x^0 = 1 for every x, NaN included.
    let one = k.cst(VF, 1.0);
    k.select_cmp(FloatCC::Equal, y, zero, one, r)
}
