//! Softmax row kernels assembled with `iced-x86` (AVX-512 and AVX2 from one
//! generator): the exponentials are most of the work of a softmax or an
//! attention block, and Cranelift's 128-bit code spills the exp constants
//! and serializes the row max on its NaN-exact `fmax` lowering.
//!
//! The algorithm is written once over vector register *indices*; the few
//! instruction helpers at the bottom map an index to a zmm or ymm register,
//! and masked tails to opmasks (AVX-512) or `vmaskmovps` masks (AVX2).
//!
//! `exp` mirrors `codegen::math::exp` operation for operation (same clamp,
//! range reduction, Horner order and fused multiply-adds), so on inputs
//! where both apply it returns the same bits as the Cranelift code.
//!
//! Every kernel is a SysV function of four pointers `f(p0, p1, p2, p3)`
//! (the GEMM signature), without stack frame or callee-saved registers.

use super::{AsmError, Level};
use iced_x86::code_asm::*;
use iced_x86::Register;

/// One assembled softmax kernel; sizes in f32 elements, all compile-time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SoftmaxKernel {
    /// FlashAttention key-block update, `f(S, m, l, O)`: for each of `rows`
    /// rows r of the score tile S (row stride `ld`, `n` keys):
    /// `m' = max(m[r], max S[r,:])`, `ms = (m' == −inf ? 0 : m')`,
    /// `c = exp(m[r] − ms)`, `S[r,:] = exp(S[r,:] − ms)`,
    /// `l[r] = l[r]·c + Σ S[r,:]`, `m[r] = m'`, `O[r, 0..dv] *= c` (row
    /// stride `dv`). `first`: the first key block, entered with m = −inf,
    /// l = 0 and O = 0 — neither m nor l is read and O (0·c = 0) is left
    /// alone, which takes the correction exp off every row.
    Online {
        rows: usize,
        n: usize,
        ld: usize,
        dv: usize,
        first: bool,
    },
    /// Plain softmax, `f(X, Y, _, _)`: `Y[r,:] = exp(X[r,:] − m)·(1/Σ)`
    /// with `m` the row max, rows contiguous (`n` elements each).
    Rows { rows: usize, n: usize },
    /// `f(X, Y, _, _)`: `Y[i] = exp(X[i])` for `i < n` (accuracy tests).
    /// `bounded`: the caller guarantees x ≤ 0 or NaN (the softmax case),
    /// which drops the overflow clamp.
    Exp { n: usize, bounded: bool },
}

/// Assembles `kern` for `level`.
pub fn assemble(kern: &SoftmaxKernel, level: Level) -> Result<Vec<u8>, String> {
    let mut g = G::new(level).map_err(|e| e.0)?;
    g.kernel(kern).map_err(|e| e.0)?;
    g.finish().map_err(|e| e.0)
}

// ---------------------------------------------------------------------------

/// An operand: a vector register index or a memory operand (a constant or
/// data; on AVX-512 a `zmmword`/`dword_bcst`, on AVX2 a `ymmword`).
#[derive(Clone, Copy)]
enum Op {
    R(usize),
    M(AsmMemoryOperand),
}

type Res = Result<(), AsmError>;

/// Exp constants (Cephes `expf`, as in `codegen::math::exp`).
const LO: f32 = -87.336_55;
const HI: f32 = 88.722_83;
const LN2_HI: f32 = -0.693_359_4;
const LN2_LO: f32 = 2.121_944_4e-4;
const POLY: [f32; 6] = [
    5e-1,
    1.666_666_5e-1,
    4.166_579_6e-2,
    8.333_452e-3,
    1.398_199_9e-3,
    1.987_569_1e-4,
];

/// vcmpps predicates.
const NEQ_UQ: i32 = 4;
const NLT_UQ: i32 = 5;
const GT_OQ: i32 = 0x1e;

/// Pointer registers (the four arguments) and the row counter.
const P0: AsmRegister64 = rdi;
const P1: AsmRegister64 = rsi;
const P2: AsmRegister64 = rdx;
const P3: AsmRegister64 = rcx;
const CNT: AsmRegister32 = eax;

/// Opmasks (AVX-512): row tail, O tail, compare scratch.
const KN: usize = 1;
const KCMP: usize = 2;
const KDV: usize = 3;

/// The exp constants as operands.
#[derive(Clone, Copy)]
struct Consts {
    /// Always a register: it is the first source of `vmaxps` (NaN order).
    lo: usize,
    hi: Op,
    log2e: Op,
    ln2_hi: Op,
    ln2_lo: Op,
    c: [Op; 6],
    one: Op,
    ninf: Op,
    inf: Op,
    /// i32 127 in every lane (AVX2 exponent bias).
    bias: Op,
    /// 1.5·2^23, the rounding constant.
    magic: Op,
}

/// Work registers: exp input X, temps T1..T4 (result in T3), up to four
/// accumulators, the row's safe max and correction.
const X: usize = 0;
const T1: usize = 1;
const T2: usize = 2;
const T3: usize = 3;
const T4: usize = 4;
const ACC: usize = 5;
const MSAFE: usize = 9;
const CORR: usize = 10;
/// AVX2: lane mask of the row tail.
const MASKN: usize = 11;

struct G {
    a: CodeAssembler,
    level: Level,
    label_at: Option<usize>,
    /// Constant pool: (label, lanes of u32), emitted after the code.
    pool: Vec<(CodeLabel, Vec<u32>)>,
    k: Option<Consts>,
}

fn zr(i: usize) -> AsmRegisterZmm {
    get_zmm(Register::ZMM0 + i as u32).expect("zmm index")
}
fn yr(i: usize) -> AsmRegisterYmm {
    get_ymm(Register::YMM0 + i as u32).expect("ymm index")
}
fn xr(i: usize) -> AsmRegisterXmm {
    get_xmm(Register::XMM0 + i as u32).expect("xmm index")
}
fn kr(i: usize) -> AsmRegisterK {
    get_k(Register::K0 + i as u32).expect("k index")
}

/// `d = a op b` for both levels, `b` a register or memory.
macro_rules! v3 {
    ($name:ident, $ins:ident) => {
        fn $name(&mut self, d: usize, a: usize, b: Op) -> Res {
            match (self.level, b) {
                (Level::Avx512, Op::R(b)) => self.a.$ins(zr(d), zr(a), zr(b))?,
                (Level::Avx512, Op::M(m)) => self.a.$ins(zr(d), zr(a), m)?,
                (Level::Avx2Fma, Op::R(b)) => self.a.$ins(yr(d), yr(a), yr(b))?,
                (Level::Avx2Fma, Op::M(m)) => self.a.$ins(yr(d), yr(a), m)?,
            }
            Ok(())
        }
    };
}

impl G {
    fn new(level: Level) -> Result<Self, AsmError> {
        Ok(G {
            a: CodeAssembler::new(64)?,
            level,
            label_at: None,
            pool: Vec::new(),
            k: None,
        })
    }

    fn lanes(&self) -> usize {
        self.level.lanes()
    }

    fn bind(&mut self, l: &mut CodeLabel) -> Res {
        if self.label_at == Some(self.a.instructions().len()) {
            self.a.nop()?;
        }
        self.label_at = Some(self.a.instructions().len());
        Ok(self.a.set_label(l)?)
    }

    /// A pool constant of `lanes` copies of `bits` (AVX-512: one, broadcast).
    fn pool_const(&mut self, bits: u32) -> CodeLabel {
        let reps = match self.level {
            Level::Avx512 => 1,
            Level::Avx2Fma => 8,
        };
        let l = self.a.create_label();
        self.pool.push((l, vec![bits; reps]));
        l
    }

    /// A constant as an operand: loaded into register `reg`, or (None) read
    /// from the pool by every use.
    fn konst(&mut self, bits: u32, reg: Option<usize>) -> Result<Op, AsmError> {
        let l = self.pool_const(bits);
        Ok(match (reg, self.level) {
            (Some(r), Level::Avx512) => {
                self.a.vbroadcastss(zr(r), dword_ptr(l))?;
                Op::R(r)
            }
            (Some(r), Level::Avx2Fma) => {
                self.a.vmovups(yr(r), ymmword_ptr(l))?;
                Op::R(r)
            }
            (None, Level::Avx512) => Op::M(dword_bcst(l)),
            (None, Level::Avx2Fma) => Op::M(ymmword_ptr(l)),
        })
    }

    /// Loads the exp constants: all in zmm16.. on AVX-512; on AVX2 the
    /// five registers above the work set, the rest from memory.
    fn load_consts(&mut self, full: bool) -> Res {
        let f = |x: f32| x.to_bits();
        let avx512 = self.level == Level::Avx512;
        let mut next = if avx512 { 16 } else { MASKN + 1 };
        let top = if avx512 { 32 } else { 16 };
        let mut reg = |want: bool| {
            if want && next < top {
                next += 1;
                Some(next - 1)
            } else {
                None
            }
        };
        let lo_r = reg(true).expect("register for LO");
        self.konst(f(LO), Some(lo_r))?;
        let log2e = self.konst(f(std::f32::consts::LOG2_E), reg(true))?;
        let ln2_hi = self.konst(f(LN2_HI), reg(true))?;
        let ln2_lo = self.konst(f(LN2_LO), reg(true))?;
        let mut c = [Op::R(0); 6];
        for i in (0..6).rev() {
            c[i] = self.konst(f(POLY[i]), reg(true))?;
        }
        let one = self.konst(f(1.0), reg(true))?;
        let ninf = self.konst(f(f32::NEG_INFINITY), reg(avx512))?;
        let hi = self.konst(f(HI), reg(full))?;
        let inf = self.konst(f(f32::INFINITY), reg(full && avx512))?;
        let magic = self.konst(f(12_582_912.0), reg(true))?;
        let bias = self.konst(127, None)?;
        self.k = Some(Consts {
            lo: lo_r,
            hi,
            log2e,
            ln2_hi,
            ln2_lo,
            c,
            one,
            ninf,
            inf,
            bias,
            magic,
        });
        Ok(())
    }

    fn kernel(&mut self, kern: &SoftmaxKernel) -> Res {
        match *kern {
            SoftmaxKernel::Online {
                rows,
                n,
                ld,
                dv,
                first,
            } => self.online(rows, n, ld, dv, first)?,
            SoftmaxKernel::Rows { rows, n } => self.rows(rows, n)?,
            SoftmaxKernel::Exp { n, bounded } => self.exp_array(n, !bounded)?,
        }
        self.a.vzeroupper()?;
        self.a.ret()?;
        for (mut l, data) in std::mem::take(&mut self.pool) {
            self.bind(&mut l)?;
            self.a.dd(&data)?;
        }
        Ok(())
    }

    /// Loads the lane mask of an `n`-element row's tail into opmask
    /// `kreg` (AVX-512) or returns its pool label (AVX2, loaded where
    /// used). None: `n` is whole vectors.
    fn tail_mask(&mut self, n: usize, kreg: usize) -> Result<Option<CodeLabel>, AsmError> {
        let t = n % self.lanes();
        if t == 0 {
            return Ok(None);
        }
        let l = self.a.create_label();
        match self.level {
            Level::Avx512 => {
                self.a.mov(r8d, (1u32 << t) - 1)?;
                self.a.kmovw(kr(kreg), r8d)?;
            }
            Level::Avx2Fma => {
                let bits: Vec<u32> = (0..8).map(|i| if i < t { !0 } else { 0 }).collect();
                self.pool.push((l, bits));
            }
        }
        Ok(Some(l))
    }

    fn consts(&self) -> Consts {
        self.k.expect("constants loaded")
    }

    // -- kernels ------------------------------------------------------------

    /// Row loop, software-pipelined: the max of row r+1 (a chain of
    /// dependent reductions) is emitted between `head` and `tail` of row r,
    /// so it overlaps row r's exponentials instead of stalling the next row.
    /// `head` reads the row max from [`G::maxr`]; `next` is the byte offset
    /// of the next row from P0; `steps` the pointer increments per row.
    fn row_loop(
        &mut self,
        rows: usize,
        n: usize,
        next: i32,
        steps: [i32; 4],
        head: &mut dyn FnMut(&mut G) -> Res,
        tail: &mut dyn FnMut(&mut G) -> Res,
    ) -> Res {
        if rows == 0 {
            return Ok(());
        }
        self.row_max(P0, 0, n)?;
        if rows > 1 {
            let mut l = self.a.create_label();
            self.a.mov(CNT, rows as u32 - 1)?;
            self.bind(&mut l)?;
            head(self)?;
            self.row_max(P0, next, n)?;
            tail(self)?;
            for (p, s) in [P0, P1, P2, P3].into_iter().zip(steps) {
                if s != 0 {
                    self.a.add(p, s)?;
                }
            }
            self.a.dec(CNT)?;
            self.a.jne(l)?;
        }
        head(self)?;
        tail(self)
    }

    fn online(&mut self, rows: usize, n: usize, ld: usize, dv: usize, first: bool) -> Res {
        self.load_consts(false)?;
        let mn = self.tail_mask(n, KN)?;
        if let Some(l) = mn {
            self.a.vmovups(yr(MASKN), ymmword_ptr(l))?;
        }
        let mdv = self.tail_mask(dv, KDV)?;
        let k = self.consts();
        let steps = [off(ld)?, 4, 4, off(dv)?];
        let mx = self.maxr();
        if first {
            // m' = block max, ms = m' or 0 when m' = −inf; l = Σ.
            return self.row_loop(
                rows,
                n,
                off(ld)?,
                steps,
                &mut |g| {
                    g.a.vmovss(dword_ptr(P1), xr(mx))?;
                    g.keep_where(MSAFE, mx, mx, k.ninf, NEQ_UQ)
                },
                &mut |g| {
                    g.exp_row(P0, P0, n)?;
                    Ok(g.a.vmovss(dword_ptr(P2), xr(ACC))?)
                },
            );
        }
        self.row_loop(
            rows,
            n,
            off(ld)?,
            steps,
            &mut |g| {
                // m' = max(m, block max); ms = m' or 0 when m' = −inf;
                // c = exp(m − ms).
                g.bcast(T4, dword_ptr(P1))?;
                g.vmax(T2, T4, Op::R(mx))?;
                g.a.vmovss(dword_ptr(P1), xr(T2))?;
                g.keep_where(MSAFE, T2, T2, k.ninf, NEQ_UQ)?;
                g.vsub(X, T4, Op::R(MSAFE))?;
                g.exp(false)?;
                g.mov(CORR, Op::R(T3))
            },
            &mut |g| {
                g.exp_row(P0, P0, n)?;
                // l = l·c + Σ
                g.a.vmovss(xr(T1), dword_ptr(P2))?;
                g.fma213(T1, CORR, Op::R(ACC))?;
                g.a.vmovss(dword_ptr(P2), xr(T1))?;
                g.scale_row(P3, dv, CORR, mdv, KDV)
            },
        )
    }

    fn rows(&mut self, rows: usize, n: usize) -> Res {
        self.load_consts(false)?;
        let mn = self.tail_mask(n, KN)?;
        if let Some(l) = mn {
            self.a.vmovups(yr(MASKN), ymmword_ptr(l))?;
        }
        let k = self.consts();
        let step = off(n)?;
        let mx = self.maxr();
        self.row_loop(
            rows,
            n,
            step,
            [step, step, 0, 0],
            &mut |g| g.mov(MSAFE, Op::R(mx)),
            &mut |g| {
                g.exp_row(P0, P1, n)?;
                // y *= 1/Σ
                g.mov(CORR, k.one)?;
                g.vdiv(CORR, CORR, Op::R(ACC))?;
                g.scale_row(P1, n, CORR, mn, KN)
            },
        )
    }

    /// `Y[i] = exp(X[i])`, no row structure (tests).
    fn exp_array(&mut self, n: usize, full: bool) -> Res {
        self.load_consts(full)?;
        let mn = self.tail_mask(n, KN)?;
        let lanes = self.lanes();
        for v in 0..n.div_ceil(lanes) {
            let o = off(v * lanes)?;
            let tail = (v + 1) * lanes > n;
            if tail {
                let l = mn.expect("tail mask");
                if self.level == Level::Avx2Fma {
                    self.a.vmovups(yr(MASKN), ymmword_ptr(l))?;
                }
                self.load_tail(X, P0, o, MASKN, KN)?;
            } else {
                self.load(X, P0, o)?;
            }
            self.exp(full)?;
            if tail {
                self.store_tail(P1, o, T3, MASKN, KN)?;
            } else {
                self.store(P1, o, T3)?;
            }
        }
        Ok(())
    }

    /// Sum accumulators from ACC for a row of `n`.
    fn naccs(&self, n: usize) -> usize {
        let most = match self.level {
            Level::Avx512 => 4,
            Level::Avx2Fma => 2,
        };
        n.div_ceil(self.lanes()).clamp(1, most)
    }

    /// First max accumulator and how many there are (disjoint from the
    /// sum accumulators: the next row's max runs beside this row's sums).
    fn max_accs(&self) -> (usize, usize) {
        match self.level {
            Level::Avx512 => (11, 4),
            Level::Avx2Fma => (7, 2),
        }
    }

    /// The register [`G::row_max`] leaves the row max in.
    fn maxr(&self) -> usize {
        self.max_accs().0
    }

    /// Row max of `n` elements at `base + o0` into every lane of `maxr`.
    fn row_max(&mut self, base: AsmRegister64, o0: i32, n: usize) -> Res {
        let k = self.consts();
        let lanes = self.lanes();
        let (m0, most) = self.max_accs();
        let na = n.div_ceil(lanes).clamp(1, most);
        for i in 0..na {
            self.mov(m0 + i, k.ninf)?;
        }
        let nv = n / lanes;
        for v in 0..nv {
            let acc = m0 + v % na;
            let m = self.vmem(base, o0 + off(v * lanes)?);
            self.vmax(acc, acc, Op::M(m))?;
        }
        if !n.is_multiple_of(lanes) {
            let acc = m0 + nv % na;
            let o = o0 + off(nv * lanes)?;
            match self.level {
                Level::Avx512 => {
                    let m = zmmword_ptr(base + o);
                    self.a.vmaxps(zr(acc).k1(), zr(acc), m)?;
                }
                Level::Avx2Fma => {
                    self.a
                        .vmaskmovps(yr(T1), yr(MASKN), ymmword_ptr(base + o))?;
                    self.mov(T2, k.ninf)?;
                    self.a.vblendvps(yr(T1), yr(T2), yr(T1), yr(MASKN))?;
                    self.vmax(acc, acc, Op::R(T1))?;
                }
            }
        }
        for i in 1..na {
            self.vmax(m0, m0, Op::R(m0 + i))?;
        }
        self.hreduce(m0, G::vmax)
    }

    /// `dst[i] = exp(src[i] − MSAFE)` over a row of `n`, the sum into every
    /// lane of ACC.
    fn exp_row(&mut self, src: AsmRegister64, dst: AsmRegister64, n: usize) -> Res {
        let lanes = self.lanes();
        let na = self.naccs(n);
        for i in 0..na {
            self.zero(ACC + i)?;
        }
        let nv = n / lanes;
        for v in 0..nv {
            let o = off(v * lanes)?;
            self.load(X, src, o)?;
            self.vsub(X, X, Op::R(MSAFE))?;
            self.exp(false)?;
            self.store(dst, o, T3)?;
            let acc = ACC + v % na;
            self.vadd(acc, acc, Op::R(T3))?;
        }
        if !n.is_multiple_of(lanes) {
            let o = off(nv * lanes)?;
            let acc = ACC + nv % na;
            self.load_tail(X, src, o, MASKN, KN)?;
            self.vsub(X, X, Op::R(MSAFE))?;
            self.exp(false)?;
            self.store_tail(dst, o, T3, MASKN, KN)?;
            match self.level {
                Level::Avx512 => self.a.vaddps(zr(acc).k1(), zr(acc), zr(T3))?,
                Level::Avx2Fma => {
                    self.a.vandps(yr(T3), yr(T3), yr(MASKN))?;
                    self.vadd(acc, acc, Op::R(T3))?;
                }
            }
        }
        for i in 1..na {
            self.vadd(ACC, ACC, Op::R(ACC + i))?;
        }
        self.hreduce(ACC, G::vadd)
    }

    /// `p[0..n] *= s` (register `s`); the tail's mask: pool label `mask`
    /// (AVX2) or opmask `kreg` (AVX-512).
    fn scale_row(
        &mut self,
        p: AsmRegister64,
        n: usize,
        s: usize,
        mask: Option<CodeLabel>,
        kreg: usize,
    ) -> Res {
        let lanes = self.lanes();
        let nv = n / lanes;
        for v in 0..nv {
            let o = off(v * lanes)?;
            let m = self.vmem(p, o);
            self.vmul(T1, s, Op::M(m))?;
            self.store(p, o, T1)?;
        }
        if !n.is_multiple_of(lanes) {
            let o = off(nv * lanes)?;
            let l = mask.expect("tail mask");
            if self.level == Level::Avx2Fma {
                self.a.vmovups(yr(T2), ymmword_ptr(l))?;
            }
            self.load_tail(T1, p, o, T2, kreg)?;
            self.vmul(T1, T1, Op::R(s))?;
            self.store_tail(p, o, T1, T2, kreg)?;
        }
        Ok(())
    }

    /// exp(X) into T3 (temps T1, T2, T4; X kept), operation for operation
    /// as `codegen::math::exp`. Without `full` the caller guarantees
    /// X ≤ 0 or NaN: no upper clamp, and 2^n (n ≤ 0) is one normal scale.
    fn exp(&mut self, full: bool) -> Res {
        let k = self.consts();
        // xc = min(max(x, lo), hi), NaN kept (x is the second source).
        self.vmax(T1, k.lo, Op::R(X))?;
        if full {
            let hi = self.in_reg(k.hi, T2)?;
            self.vmin(T1, hi, Op::R(T1))?;
        }
        self.vmul(T2, T1, k.log2e)?;
        // Round to nearest even by adding and subtracting 1.5·2^23 (|t| ≤
        // 128): exactly `nearest`, on either FP port (vrndscaleps is two
        // port-0 uops).
        self.vadd(T2, T2, k.magic)?;
        self.vsub(T2, T2, k.magic)?;
        self.fma231(T1, T2, k.ln2_hi)?;
        self.fma231(T1, T2, k.ln2_lo)?;
        // Horner from the top: p = c5·r + c4, then p = p·r + c_i.
        self.mov(T3, k.c[4])?;
        self.fma231(T3, T1, k.c[5])?;
        for i in (0..4).rev() {
            self.fma213(T3, T1, k.c[i])?;
        }
        self.vmul(T4, T1, Op::R(T1))?;
        self.vadd(T1, T1, k.one)?;
        self.fma213(T3, T4, Op::R(T1))?;
        // y·2^n, and x < lo → 0 (NaN stays). The zero is applied to the
        // scale, not after it: the clamped lanes would otherwise make a
        // denormal product, a microcode assist of ~150 cycles (a masked
        // score, or the first key block's correction exp(−inf), hit it on
        // every row).
        match self.level {
            Level::Avx512 => {
                self.a.vcmpps(kr(KCMP), zr(X), zr(k.lo), NLT_UQ)?;
                self.a.vscalefps(zr(T3).k2().z(), zr(T3), zr(T2))?;
            }
            Level::Avx2Fma => {
                self.a.vcvtps2dq(yr(T2), yr(T2))?;
                let halves: &[usize] = if full {
                    // 2^n as 2^(n>>1)·2^(n−(n>>1)): n reaches 128.
                    self.a.vpsrad(yr(T4), yr(T2), 1)?;
                    self.a.vpsubd(yr(T2), yr(T2), yr(T4))?;
                    &[T4, T2]
                } else {
                    &[T2]
                };
                self.cmp_ymm(T1, X, Op::R(k.lo), NLT_UQ)?;
                for (i, &h) in halves.iter().enumerate() {
                    self.vpaddd(h, h, k.bias)?;
                    self.a.vpslld(yr(h), yr(h), 23)?;
                    if i == 0 {
                        self.a.vandps(yr(h), yr(h), yr(T1))?;
                    }
                    self.vmul(T3, T3, Op::R(h))?;
                }
            }
        }
        // x > hi → +inf.
        if full {
            match self.level {
                Level::Avx512 => {
                    let Op::R(hi) = k.hi else {
                        return Err(AsmError("AVX-512 hi in memory".into()));
                    };
                    let Op::R(inf) = k.inf else {
                        return Err(AsmError("AVX-512 inf in memory".into()));
                    };
                    self.a.vcmpps(kr(KCMP), zr(X), zr(hi), GT_OQ)?;
                    self.a.vmovaps(zr(T3).k2(), zr(inf))?;
                }
                Level::Avx2Fma => {
                    self.cmp_ymm(T1, X, k.hi, GT_OQ)?;
                    match k.inf {
                        Op::R(r) => self.a.vblendvps(yr(T3), yr(T3), yr(r), yr(T1))?,
                        Op::M(m) => self.a.vblendvps(yr(T3), yr(T3), m, yr(T1))?,
                    }
                }
            }
        }
        Ok(())
    }

    // -- instruction helpers over both levels --------------------------------

    v3!(vmax, vmaxps);
    v3!(vmin, vminps);
    v3!(vadd, vaddps);
    v3!(vsub, vsubps);
    v3!(vmul, vmulps);
    v3!(vdiv, vdivps);
    v3!(fma231, vfmadd231ps);
    v3!(fma213, vfmadd213ps);
    v3!(vpaddd, vpaddd);

    /// A full vector of data at `base + o`.
    fn vmem(&self, base: AsmRegister64, o: i32) -> AsmMemoryOperand {
        match self.level {
            Level::Avx512 => zmmword_ptr(base + o),
            Level::Avx2Fma => ymmword_ptr(base + o),
        }
    }

    fn load(&mut self, d: usize, base: AsmRegister64, o: i32) -> Res {
        let m = self.vmem(base, o);
        match self.level {
            Level::Avx512 => self.a.vmovups(zr(d), m)?,
            Level::Avx2Fma => self.a.vmovups(yr(d), m)?,
        }
        Ok(())
    }

    fn store(&mut self, base: AsmRegister64, o: i32, s: usize) -> Res {
        let m = self.vmem(base, o);
        match self.level {
            Level::Avx512 => self.a.vmovups(m, zr(s))?,
            Level::Avx2Fma => self.a.vmovups(m, yr(s))?,
        }
        Ok(())
    }

    /// Masked load, zeros in the lanes past the tail (no fault there).
    fn load_tail(
        &mut self,
        d: usize,
        base: AsmRegister64,
        o: i32,
        ymask: usize,
        kreg: usize,
    ) -> Res {
        let m = self.vmem(base, o);
        match self.level {
            Level::Avx512 => match kreg {
                KN => self.a.vmovups(zr(d).k1().z(), m)?,
                _ => self.a.vmovups(zr(d).k3().z(), m)?,
            },
            Level::Avx2Fma => self.a.vmaskmovps(yr(d), yr(ymask), m)?,
        }
        Ok(())
    }

    fn store_tail(
        &mut self,
        base: AsmRegister64,
        o: i32,
        s: usize,
        ymask: usize,
        kreg: usize,
    ) -> Res {
        let m = self.vmem(base, o);
        match self.level {
            Level::Avx512 => match kreg {
                KN => self.a.vmovups(m.k1(), zr(s))?,
                _ => self.a.vmovups(m.k3(), zr(s))?,
            },
            Level::Avx2Fma => self.a.vmaskmovps(m, yr(ymask), yr(s))?,
        }
        Ok(())
    }

    /// Register or constant into register `d`.
    fn mov(&mut self, d: usize, s: Op) -> Res {
        match (self.level, s) {
            (Level::Avx512, Op::R(r)) => self.a.vmovaps(zr(d), zr(r))?,
            (Level::Avx512, Op::M(_)) => {
                return Err(AsmError("AVX-512 constants live in registers".into()))
            }
            (Level::Avx2Fma, Op::R(r)) => self.a.vmovaps(yr(d), yr(r))?,
            (Level::Avx2Fma, Op::M(m)) => self.a.vmovups(yr(d), m)?,
        }
        Ok(())
    }

    /// `s` as a register (loaded into `tmp` when in memory).
    fn in_reg(&mut self, s: Op, tmp: usize) -> Result<usize, AsmError> {
        match s {
            Op::R(r) => Ok(r),
            Op::M(_) => {
                self.mov(tmp, s)?;
                Ok(tmp)
            }
        }
    }

    fn bcast(&mut self, d: usize, m: AsmMemoryOperand) -> Res {
        match self.level {
            Level::Avx512 => self.a.vbroadcastss(zr(d), m)?,
            Level::Avx2Fma => self.a.vbroadcastss(yr(d), m)?,
        }
        Ok(())
    }

    fn zero(&mut self, d: usize) -> Res {
        match self.level {
            Level::Avx512 => self.a.vpxord(zr(d), zr(d), zr(d))?,
            Level::Avx2Fma => self.a.vxorps(yr(d), yr(d), yr(d))?,
        }
        Ok(())
    }

    /// AVX2 compare into a lane mask register.
    fn cmp_ymm(&mut self, d: usize, a: usize, b: Op, pred: i32) -> Res {
        match b {
            Op::R(r) => self.a.vcmpps(yr(d), yr(a), yr(r), pred)?,
            Op::M(m) => self.a.vcmpps(yr(d), yr(a), m, pred)?,
        }
        Ok(())
    }

    /// `d = pred(a, b) ? s : 0` per lane (AVX2 scratch: T1 unless `s` or
    /// `a` is T1).
    fn keep_where(&mut self, d: usize, s: usize, a: usize, b: Op, pred: i32) -> Res {
        match self.level {
            Level::Avx512 => {
                match b {
                    Op::R(r) => self.a.vcmpps(kr(KCMP), zr(a), zr(r), pred)?,
                    Op::M(m) => self.a.vcmpps(kr(KCMP), zr(a), m, pred)?,
                }
                self.a.vmovaps(zr(d).k2().z(), zr(s))?;
            }
            Level::Avx2Fma => {
                self.cmp_ymm(T1, a, b, pred)?;
                self.a.vandps(yr(d), yr(s), yr(T1))?;
            }
        }
        Ok(())
    }

    /// Reduces register `r` across lanes with `op`; every lane ends with the result.
    fn hreduce(&mut self, r: usize, op: fn(&mut G, usize, usize, Op) -> Res) -> Res {
        match self.level {
            Level::Avx512 => {
                for imm in [0x4e, 0xb1] {
                    self.a.vshuff32x4(zr(T1), zr(r), zr(r), imm)?;
                    op(self, r, r, Op::R(T1))?;
                }
                for imm in [0x4e, 0xb1] {
                    self.a.vpermilps(zr(T1), zr(r), imm)?;
                    op(self, r, r, Op::R(T1))?;
                }
            }
            Level::Avx2Fma => {
                self.a.vperm2f128(yr(T1), yr(r), yr(r), 1)?;
                op(self, r, r, Op::R(T1))?;
                for imm in [0x4e, 0xb1] {
                    self.a.vpermilps(yr(T1), yr(r), imm)?;
                    op(self, r, r, Op::R(T1))?;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, AsmError> {
        Ok(self.a.assemble(0)?)
    }
}

use super::off;
