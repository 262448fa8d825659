//! AVX-512F tile code: zmm accumulators, opmask `k1` for the column tail.
//!
//! Registers: accumulators zmm0.. (`r·nv + v`), B vectors in the top
//! registers below the two broadcast registers zmm30/zmm31. With the default
//! 14×2 tile that is 28 + 2 + 2 = 32.

use super::reg::*;
use super::{off, z, AsmError, Gen, TileShape};
use iced_x86::code_asm::*;

/// Broadcast registers (A values in the K loop; beta and zero in the epilogue).
const BC0: usize = 30;
const BC1: usize = 31;

impl Gen<'_> {
    fn acc512(&self, sh: TileShape, r: usize, v: usize) -> AsmRegisterZmm {
        z(r * sh.nv + v)
    }

    fn breg512(&self, sh: TileShape, v: usize) -> AsmRegisterZmm {
        z(BC0 - sh.nv + v)
    }

    fn masked(&self, sh: TileShape, v: usize) -> bool {
        v + 1 == sh.nv && sh.last_lanes < self.level.lanes()
    }

    pub(super) fn setup_512(&mut self) -> Result<(), AsmError> {
        let nt = self.s.n % (self.t.nv * 16);
        if nt > 0 {
            let last = (nt - 1) % 16 + 1;
            if last < 16 {
                self.a.mov(eax, (1u32 << last) - 1)?;
                self.a.kmovw(k1, eax)?;
            }
        }
        Ok(())
    }

    /// One B row of the panel (A_RUN) into the pack buffer (B_RUN).
    pub(super) fn pack_row_512(&mut self, sh: TileShape) -> Result<(), AsmError> {
        for v in 0..sh.nv {
            let x = z(v);
            let mem = zmmword_ptr(A_RUN + 64 * v as i32);
            if self.masked(sh, v) {
                self.a.vmovups(x.k1().z(), mem)?;
            } else {
                self.a.vmovups(x, mem)?;
            }
            self.a.vmovaps(zmmword_ptr(B_RUN + 64 * v as i32), x)?;
        }
        Ok(())
    }

    /// First-K-block init: zeros, or `beta·bias` when the bias is folded in.
    pub(super) fn zero_acc_512(&mut self, sh: TileShape) -> Result<(), AsmError> {
        let fold = self.bias_in_init();
        for r in 0..sh.mr {
            for v in 0..sh.nv {
                let x = self.acc512(sh, r, v);
                match (fold, self.s.bias) {
                    (true, Some((br, bc, beta))) => {
                        let at = BIAS_TILE + off(r * br + v * 16 * bc)?;
                        if bc == 0 {
                            self.a.vbroadcastss(x, dword_ptr(at))?;
                        } else if self.masked(sh, v) {
                            self.a.vmovups(x.k1().z(), zmmword_ptr(at))?;
                        } else {
                            self.a.vmovups(x, zmmword_ptr(at))?;
                        }
                        if beta != 1.0 {
                            self.a.vmulps(x, x, dword_bcst(self.l_beta))?;
                        }
                    }
                    _ => self.a.vpxord(x, x, x)?,
                }
            }
        }
        Ok(())
    }

    pub(super) fn load_acc_512(&mut self, sh: TileShape) -> Result<(), AsmError> {
        let c_row = self.s.c_row;
        for r in 0..sh.mr {
            for v in 0..sh.nv {
                let x = self.acc512(sh, r, v);
                let mem = zmmword_ptr(C_TILE + off(r * c_row + v * 16)?);
                if self.masked(sh, v) {
                    self.a.vmovups(x.k1().z(), mem)?;
                } else {
                    self.a.vmovups(x, mem)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn kstep_512(&mut self, sh: TileShape, u: usize) -> Result<(), AsmError> {
        let (a_row, a_col) = (self.s.a_row, self.s.a_col);
        let b_off = sh.b_step * u as i64;
        for v in 0..sh.nv {
            let b = self.breg512(sh, v);
            let mem = zmmword_ptr(B_RUN + (b_off + 64 * v as i64));
            if self.masked(sh, v) && !sh.b_padded {
                self.a.vmovups(b.k1().z(), mem)?;
            } else {
                self.a.vmovups(b, mem)?;
            }
        }
        for r in 0..sh.mr {
            let a_mem = A_RUN + off(r * a_row + u * a_col)?;
            if sh.nv == 1 {
                // Embedded broadcast: no register, one fused load.
                let (acc, b) = (self.acc512(sh, r, 0), self.breg512(sh, 0));
                self.a.vfmadd231ps(acc, b, dword_bcst(a_mem))?;
            } else {
                let bc = z(if r % 2 == 0 { BC0 } else { BC1 });
                self.a.vbroadcastss(bc, dword_ptr(a_mem))?;
                for v in 0..sh.nv {
                    let (acc, b) = (self.acc512(sh, r, v), self.breg512(sh, v));
                    self.a.vfmadd231ps(acc, b, bc)?;
                }
            }
        }
        Ok(())
    }

    /// Stores the tile; in the last K block applies alpha, bias and relu.
    pub(super) fn epilogue_512(&mut self, sh: TileShape, last: bool) -> Result<(), AsmError> {
        let s = self.s;
        let alpha = last && s.alpha != 1.0;
        let bias = if last && !self.bias_in_init() {
            s.bias
        } else {
            None
        };
        let relu = last && s.relu;
        let (beta_r, zero_r) = (z(BC0), z(BC1));
        if let Some((_, _, beta)) = bias {
            if beta != 1.0 {
                self.a.vbroadcastss(beta_r, dword_ptr(self.l_beta))?;
            }
        }
        if relu {
            self.a.vpxord(zero_r, zero_r, zero_r)?;
        }
        for r in 0..sh.mr {
            for v in 0..sh.nv {
                let x = self.acc512(sh, r, v);
                let m = self.masked(sh, v);
                if alpha {
                    self.a.vmulps(x, x, dword_bcst(self.l_alpha))?;
                }
                if let Some((br, bc, beta)) = bias {
                    let at = BIAS_TILE + off(r * br + v * 16 * bc)?;
                    let mem = if bc == 1 {
                        zmmword_ptr(at)
                    } else {
                        dword_bcst(at)
                    };
                    // Merge-masked so lanes past N are neither read nor used.
                    let dst = if m && bc == 1 { x.k1() } else { x };
                    if beta == 1.0 {
                        self.a.vaddps(dst, x, mem)?;
                    } else {
                        self.a.vfmadd231ps(dst, beta_r, mem)?;
                    }
                }
                if relu {
                    // max(0, x) with x second: a NaN in x propagates.
                    self.a.vmaxps(x, zero_r, x)?;
                }
                let mem = zmmword_ptr(C_TILE + off(r * s.c_row + v * 16)?);
                if m {
                    self.a.vmovups(mem.k1(), x)?;
                } else {
                    self.a.vmovups(mem, x)?;
                }
            }
        }
        Ok(())
    }
}
