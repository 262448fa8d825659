//! What the tests of the AVX-512-only kernels (`x86_winograd.rs`,
//! `x86_dconv.rs`) share: the CPU gate and seeded non-zero data.

/// The CPU runs AVX-512F (else the test says it skips).
pub fn has_avx512() -> bool {
    let ok = std::arch::is_x86_feature_detected!("avx512f");
    if !ok {
        eprintln!("skipping: CPU lacks AVX-512F");
    }
    ok
}

/// xorshift64*; values in ±[0.05, 2] (never zero, so a zero read where
/// data was expected, or the reverse, shows).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn f(&mut self) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        let mag = 0.05 + 1.95 * u;
        if self.next() & 1 == 0 {
            mag
        } else {
            -mag
        }
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}
