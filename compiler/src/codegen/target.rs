//! Target selection: triple (target-lexicon) plus a CPU feature level,
//! turned into a Cranelift ISA with the settings nnc relies on.

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;
use target_lexicon::{Architecture, Triple};

/// CPU feature level (`--cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpu {
    /// Whatever the compiling machine has (host builds only).
    Native,
    /// The target's baseline; on x86-64 nnc's baseline is x86-64-v2
    /// (SSE4.1 gives vector rounding, which the math kernels need).
    Generic,
    X86_64V2,
    X86_64V3,
    X86_64V4,
}

impl FromStr for Cpu {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "native" => Cpu::Native,
            "generic" => Cpu::Generic,
            "x86-64-v2" => Cpu::X86_64V2,
            "x86-64-v3" => Cpu::X86_64V3,
            "x86-64-v4" => Cpu::X86_64V4,
            _ => {
                return Err(format!(
                "unknown --cpu '{s}' (expected native, generic, x86-64-v2, x86-64-v3 or x86-64-v4)"
            ))
            }
        })
    }
}

/// A configured target: the ISA plus facts kernels branch on.
pub struct Target {
    pub isa: OwnedTargetIsa,
    pub has_fma: bool,
    /// x86-64 vector level of the assembled GEMM kernels (`codegen::x86`);
    /// None elsewhere (Cranelift GEMM). `NNC_ASM_GEMM=off` disables them,
    /// `NNC_ASM_GEMM=avx2` keeps AVX-512 machines on the AVX2 kernels.
    pub gemm_level: Option<crate::codegen::x86::Level>,
}

pub fn host_triple() -> Triple {
    Triple::host()
}

/// Builds the ISA for `triple` at feature level `cpu`. `pic` must be true
/// for shared libraries (see cranelift-facts: non-PIC loads of data were
/// silently redirected through the PLT).
pub fn build(triple: &Triple, cpu: Cpu, pic: bool) -> Result<Target, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| format!("setting {k}: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    )?;
    set(&mut flags, "probestack_strategy", "inline")?;
    let shared = settings::Flags::new(flags);

    let is_host = *triple == Triple::host();
    let arch = triple.architecture;
    let mut builder = if cpu == Cpu::Native {
        if !is_host {
            return Err("--cpu native is only valid when compiling for the host; pick a level for cross targets".into());
        }
        cranelift_native::builder().map_err(|e| format!("host CPU detection failed: {e}"))?
    } else {
        isa::lookup(triple.clone()).map_err(|e| format!("target {triple} is not supported: {e}"))?
    };
    if matches!(arch, Architecture::X86_64) {
        let mut features: Vec<&str> = Vec::new();
        let v2 = [
            "has_sse3",
            "has_ssse3",
            "has_sse41",
            "has_sse42",
            "has_popcnt",
        ];
        let v3 = [
            "has_avx",
            "has_avx2",
            "has_fma",
            "has_bmi1",
            "has_bmi2",
            "has_lzcnt",
        ];
        let v4 = ["has_avx512f", "has_avx512dq", "has_avx512vl"];
        match cpu {
            Cpu::Native => {}
            Cpu::Generic | Cpu::X86_64V2 => features.extend(v2),
            Cpu::X86_64V3 => features.extend(v2.iter().chain(&v3)),
            Cpu::X86_64V4 => features.extend(v2.iter().chain(&v3).chain(&v4)),
        }
        for f in features {
            builder
                .enable(f)
                .map_err(|e| format!("enabling {f}: {e}"))?;
        }
    } else if !matches!(cpu, Cpu::Native | Cpu::Generic) {
        return Err(format!("--cpu {cpu:?} applies to x86-64 targets only"));
    }
    let isa = builder
        .finish(shared)
        .map_err(|e| format!("building the {triple} backend: {e}"))?;
    let has_fma = match arch {
        Architecture::X86_64 => isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true)),
        Architecture::Aarch64(_) => true,
        _ => false,
    };
    if matches!(arch, Architecture::X86_64)
        && !isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_sse41" && f.as_bool() == Some(true))
    {
        return Err("nnc needs SSE4.1 on x86-64 (x86-64-v2 or newer)".into());
    }
    let flag = |name: &str| {
        isa.isa_flags()
            .iter()
            .any(|f| f.name == name && f.as_bool() == Some(true))
    };
    // NNC_ASM_GEMM=off|avx2 caps the level (comparisons, tests).
    let cap = std::env::var("NNC_ASM_GEMM").unwrap_or_default();
    let gemm_level = if !matches!(arch, Architecture::X86_64) || cap == "off" {
        None
    } else if flag("has_avx512f") && cap != "avx2" {
        Some(crate::codegen::x86::Level::Avx512)
    } else if flag("has_avx2") && flag("has_fma") {
        Some(crate::codegen::x86::Level::Avx2Fma)
    } else {
        None
    };
    Ok(Target {
        isa,
        has_fma,
        gemm_level,
    })
}
