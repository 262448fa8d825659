//! AVX2 + FMA tile code: ymm accumulators, `vmaskmovps` for the column tail.
//!
//! Registers: accumulators ymm0.. (`r·nv + v`, at most 12), B vectors
//! ymm12/ymm13, A broadcasts ymm14 (and ymm15 outside tail tiles, where
//! ymm15 holds the lane mask). Epilogue: ymm12 beta, ymm13 scratch,
//! ymm14 zero, ymm15 mask.

use super::reg::*;
use super::{off, AsmError, Gen, TileShape};
use iced_x86::code_asm::*;
use iced_x86::Register;

fn y(i: usize) -> AsmRegisterYmm {
    get_ymm(Register::YMM0 + i as u32).expect("ymm index")
}

const MASK: usize = 15;

impl Gen<'_> {
    fn acc256(&self, sh: TileShape, r: usize, v: usize) -> AsmRegisterYmm {
        y(r * sh.nv + v)
    }

    fn masked256(&self, sh: TileShape, v: usize) -> bool {
        v + 1 == sh.nv && sh.last_lanes < 8
    }

    fn tail256(&self, sh: TileShape) -> bool {
        sh.last_lanes < 8
    }

    pub(super) fn load_mask(&mut self, sh: TileShape) -> Result<(), AsmError> {
        if self.tail256(sh) {
            self.a.vmovups(y(MASK), ymmword_ptr(self.l_mask))?;
        }
        Ok(())
    }

    /// One B row of the panel (A_RUN) into the pack buffer (B_RUN); the
    /// mask must be loaded.
    pub(super) fn pack_row_256(&mut self, sh: TileShape) -> Result<(), AsmError> {
        for v in 0..sh.nv {
            let x = y(v);
            let mem = ymmword_ptr(A_RUN + 32 * v as i32);
            if self.masked256(sh, v) {
                self.a.vmaskmovps(x, y(MASK), mem)?;
            } else {
                self.a.vmovups(x, mem)?;
            }
            self.a.vmovaps(ymmword_ptr(B_RUN + 32 * v as i32), x)?;
        }
        Ok(())
    }

    /// First-K-block init: zeros, or `beta·bias` when the bias is folded in.
    pub(super) fn zero_acc_256(&mut self, sh: TileShape) -> Result<(), AsmError> {
        // The K loop of a tail tile needs the mask (unpacked B loads).
        self.load_mask(sh)?;
        let fold = self.bias_in_init();
        for r in 0..sh.mr {
            for v in 0..sh.nv {
                let x = self.acc256(sh, r, v);
                match (fold, self.s.bias) {
                    (true, Some((br, bc, beta))) => {
                        let at = BIAS_TILE + off(r * br + v * 8 * bc)?;
                        if bc == 0 {
                            self.a.vbroadcastss(x, dword_ptr(at))?;
                        } else if self.masked256(sh, v) {
                            self.a.vmaskmovps(x, y(MASK), ymmword_ptr(at))?;
                        } else {
                            self.a.vmovups(x, ymmword_ptr(at))?;
                        }
                        if beta != 1.0 {
                            self.a.vmulps(x, x, ymmword_ptr(self.l_beta))?;
                        }
                    }
                    _ => self.a.vxorps(x, x, x)?,
                }
            }
        }
        Ok(())
    }

    pub(super) fn load_acc_256(&mut self, sh: TileShape) -> Result<(), AsmError> {
        self.load_mask(sh)?;
        let c_row = self.s.c_row;
        for r in 0..sh.mr {
            for v in 0..sh.nv {
                let x = self.acc256(sh, r, v);
                let mem = ymmword_ptr(C_TILE + off(r * c_row + v * 8)?);
                if self.masked256(sh, v) {
                    self.a.vmaskmovps(x, y(MASK), mem)?;
                } else {
                    self.a.vmovups(x, mem)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn kstep_256(&mut self, sh: TileShape, u: usize) -> Result<(), AsmError> {
        let (a_row, a_col) = (self.s.a_row, self.s.a_col);
        let b_off = sh.b_step * u as i64;
        for v in 0..sh.nv {
            let b = y(12 + v);
            let mem = ymmword_ptr(B_RUN + (b_off + 32 * v as i64));
            if self.masked256(sh, v) && !sh.b_padded {
                self.a.vmaskmovps(b, y(MASK), mem)?;
            } else {
                self.a.vmovups(b, mem)?;
            }
        }
        let tail = self.tail256(sh);
        for r in 0..sh.mr {
            let a_mem = A_RUN + off(r * a_row + u * a_col)?;
            let bc = y(if r % 2 == 1 && !tail { 15 } else { 14 });
            self.a.vbroadcastss(bc, dword_ptr(a_mem))?;
            for v in 0..sh.nv {
                self.a.vfmadd231ps(self.acc256(sh, r, v), y(12 + v), bc)?;
            }
        }
        Ok(())
    }

    pub(super) fn epilogue_256(&mut self, sh: TileShape, last: bool) -> Result<(), AsmError> {
        let s = self.s;
        let alpha = last && s.alpha != 1.0;
        let bias = if last && !self.bias_in_init() {
            s.bias
        } else {
            None
        };
        let relu = last && s.relu;
        let (beta_r, tmp, zero_r, mask) = (y(12), y(13), y(14), y(MASK));
        if let Some((_, _, beta)) = bias {
            if beta != 1.0 {
                self.a.vbroadcastss(beta_r, dword_ptr(self.l_beta))?;
            }
        }
        if relu {
            self.a.vxorps(zero_r, zero_r, zero_r)?;
        }
        for r in 0..sh.mr {
            for v in 0..sh.nv {
                let x = self.acc256(sh, r, v);
                let m = self.masked256(sh, v);
                if alpha {
                    self.a.vmulps(x, x, ymmword_ptr(self.l_alpha))?;
                }
                if let Some((br, bc, beta)) = bias {
                    let at = BIAS_TILE + off(r * br + v * 8 * bc)?;
                    let src = if bc == 0 {
                        self.a.vbroadcastss(tmp, dword_ptr(at))?;
                        Some(tmp)
                    } else if m {
                        self.a.vmaskmovps(tmp, mask, ymmword_ptr(at))?;
                        Some(tmp)
                    } else {
                        None
                    };
                    match (src, beta == 1.0) {
                        (Some(t), true) => self.a.vaddps(x, x, t)?,
                        (Some(t), false) => self.a.vfmadd231ps(x, beta_r, t)?,
                        (None, true) => self.a.vaddps(x, x, ymmword_ptr(at))?,
                        (None, false) => self.a.vfmadd231ps(x, beta_r, ymmword_ptr(at))?,
                    }
                }
                if relu {
                    self.a.vmaxps(x, zero_r, x)?;
                }
                let mem = ymmword_ptr(C_TILE + off(r * s.c_row + v * 8)?);
                if m {
                    self.a.vmaskmovps(mem, mask, x)?;
                } else {
                    self.a.vmovups(mem, x)?;
                }
            }
        }
        Ok(())
    }
}
