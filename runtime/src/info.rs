//! Safe, owned copies of a library's `nnc_model_info`.

use std::ffi::{c_char, CStr};

use crate::abi::{self, NNC_ABI_VERSION};
use crate::error::{Error, Result};
use crate::tensor::{checked_sizes, DType, Tensor};

/// Highest rank accepted from a library; anything above is certainly garbage.
pub const MAX_RANK: usize = 64;
/// Most inputs (or outputs) accepted from a library, for the same reason.
pub const MAX_TENSORS: usize = 1 << 20;

/// Signature of one input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements (validated not to overflow when the info was read).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of one buffer of this tensor in bytes.
    pub fn byte_size(&self) -> usize {
        self.numel() * self.dtype.size_of()
    }

    /// A zero-filled tensor of this signature, e.g. to receive an output.
    pub fn zeros(&self) -> Result<Tensor> {
        Tensor::zeros(self.dtype, &self.shape)
    }
}

/// Signature and resource needs of a compiled model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Graph order, as `run` expects them.
    pub inputs: Vec<TensorInfo>,
    /// Graph order, as `run` returns them.
    pub outputs: Vec<TensorInfo>,
    /// Bytes of scratch one run needs.
    pub workspace_size: usize,
    /// Alignment of the scratch: a power of two, at least 64.
    pub workspace_align: usize,
    /// Which compiler built the library, e.g. `"nnc 0.1.0"`.
    pub producer: String,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidInfo {
        reason: reason.into(),
    }
}

/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn read_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

impl TensorInfo {
    /// Copies and validates one `nnc_tensor_info`; `what` names it in errors.
    ///
    /// # Safety
    /// Non-null pointers in `raw` must be valid as the ABI describes.
    unsafe fn from_raw(raw: &abi::nnc_tensor_info, what: &str) -> Result<TensorInfo> {
        // SAFETY: forwarded from the caller.
        let name =
            unsafe { read_str(raw.name) }.ok_or_else(|| invalid(format!("{what}: null name")))?;
        let dtype = DType::from_onnx(raw.dtype).ok_or_else(|| {
            invalid(format!(
                "{what} `{name}`: unsupported dtype code {}",
                raw.dtype
            ))
        })?;
        let rank = usize::try_from(raw.rank)
            .map_err(|_| invalid(format!("{what} `{name}`: negative rank {}", raw.rank)))?;
        if rank > MAX_RANK {
            return Err(invalid(format!(
                "{what} `{name}`: rank {rank} exceeds {MAX_RANK}"
            )));
        }
        let dims: &[i64] = if rank == 0 {
            &[]
        } else if raw.shape.is_null() {
            return Err(invalid(format!("{what} `{name}`: null shape")));
        } else {
            // SAFETY: non-null, and the ABI says it has `rank` entries.
            unsafe { std::slice::from_raw_parts(raw.shape, rank) }
        };
        let shape = dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| invalid(format!("{what} `{name}`: negative dimension in {dims:?}")))?;
        checked_sizes(dtype, &shape)
            .map_err(|_| invalid(format!("{what} `{name}`: shape {shape:?} is too large")))?;
        Ok(TensorInfo { name, dtype, shape })
    }
}

/// # Safety
/// If `count > 0` and `p` is non-null, `p` points to `count` entries.
unsafe fn read_tensors(
    p: *const abi::nnc_tensor_info,
    count: u32,
    what: &str,
) -> Result<Vec<TensorInfo>> {
    let count = count as usize;
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_TENSORS {
        return Err(invalid(format!("{count} {what}s is implausible")));
    }
    if p.is_null() {
        return Err(invalid(format!("{count} {what}s but a null {what} array")));
    }
    // SAFETY: non-null with `count` entries per the caller's contract.
    let raw = unsafe { std::slice::from_raw_parts(p, count) };
    raw.iter()
        .enumerate()
        // SAFETY: forwarded from the caller.
        .map(|(i, t)| unsafe { TensorInfo::from_raw(t, &format!("{what} {i}")) })
        .collect()
}

impl ModelInfo {
    /// Copies and validates the info a library returned, so that nothing
    /// later depends on the library's data or trusts it blindly.
    ///
    /// Null pointers, an ABI version mismatch, unknown dtypes, negative or
    /// absurd ranks and dimensions, and a bad alignment are reported as
    /// errors rather than dereferenced.
    ///
    /// # Safety
    /// `raw` is null or points to an `nnc_model_info` whose non-null
    /// pointers are valid as the ABI describes (arrays of the stated length,
    /// NUL-terminated strings).
    pub unsafe fn from_raw(raw: *const abi::nnc_model_info) -> Result<ModelInfo> {
        if raw.is_null() {
            return Err(invalid("the info function returned null"));
        }
        // SAFETY: non-null, and valid per the caller's contract.
        let raw = unsafe { &*raw };
        if raw.abi_version != NNC_ABI_VERSION {
            return Err(Error::AbiVersion {
                found: raw.abi_version,
                expected: NNC_ABI_VERSION,
            });
        }
        // SAFETY: forwarded from the caller.
        let inputs = unsafe { read_tensors(raw.inputs, raw.num_inputs, "input") }?;
        // SAFETY: forwarded from the caller.
        let outputs = unsafe { read_tensors(raw.outputs, raw.num_outputs, "output") }?;
        let workspace_size = usize::try_from(raw.workspace_size)
            .ok()
            .filter(|&s| s <= isize::MAX as usize)
            .ok_or_else(|| {
                invalid(format!(
                    "workspace size {} is too large",
                    raw.workspace_size
                ))
            })?;
        let align = raw.workspace_align;
        if !align.is_power_of_two() || align > (1 << 30) {
            return Err(invalid(format!(
                "workspace alignment {align} is not a reasonable power of two"
            )));
        }
        // The ABI promises at least 64; honouring more never hurts.
        let workspace_align = (align as usize).max(64);
        // SAFETY: forwarded from the caller.
        let producer = unsafe { read_str(raw.producer) }.unwrap_or_default();
        Ok(ModelInfo {
            inputs,
            outputs,
            workspace_size,
            workspace_align,
            producer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    const X: &CStr = c"x";
    const Y: &CStr = c"y";
    const PRODUCER: &CStr = c"nnc test";

    fn tensor(name: &CStr, dtype: i32, shape: &[i64]) -> abi::nnc_tensor_info {
        abi::nnc_tensor_info {
            name: name.as_ptr(),
            dtype,
            rank: shape.len() as i32,
            shape: shape.as_ptr(),
        }
    }

    fn model(ins: &[abi::nnc_tensor_info], outs: &[abi::nnc_tensor_info]) -> abi::nnc_model_info {
        abi::nnc_model_info {
            abi_version: NNC_ABI_VERSION,
            num_inputs: ins.len() as u32,
            num_outputs: outs.len() as u32,
            inputs: ins.as_ptr(),
            outputs: outs.as_ptr(),
            workspace_size: 4096,
            workspace_align: 64,
            producer: PRODUCER.as_ptr(),
        }
    }

    fn read(m: &abi::nnc_model_info) -> Result<ModelInfo> {
        unsafe { ModelInfo::from_raw(m) }
    }

    fn reason(r: Result<ModelInfo>) -> String {
        match r {
            Err(Error::InvalidInfo { reason }) => reason,
            other => panic!("expected InvalidInfo, got {other:?}"),
        }
    }

    #[test]
    fn reads_valid_info() {
        let xs = [1, 3, 4, 4];
        let ys = [1, 10];
        let ins = [tensor(X, 1, &xs)];
        let outs = [tensor(Y, 7, &ys), tensor(Y, 9, &[])];
        let info = read(&model(&ins, &outs)).unwrap();
        assert_eq!(info.inputs.len(), 1);
        assert_eq!(info.inputs[0].name, "x");
        assert_eq!(info.inputs[0].dtype, DType::F32);
        assert_eq!(info.inputs[0].shape, vec![1, 3, 4, 4]);
        assert_eq!(info.inputs[0].numel(), 48);
        assert_eq!(info.inputs[0].byte_size(), 192);
        assert_eq!(info.outputs[0].dtype, DType::I64);
        assert_eq!(info.outputs[1].shape, Vec::<usize>::new());
        assert_eq!(info.outputs[1].numel(), 1);
        assert_eq!(info.workspace_size, 4096);
        assert_eq!(info.workspace_align, 64);
        assert_eq!(info.producer, "nnc test");
    }

    #[test]
    fn null_info() {
        assert!(reason(unsafe { ModelInfo::from_raw(ptr::null()) }).contains("null"));
    }

    #[test]
    fn abi_version_mismatch() {
        let mut m = model(&[], &[]);
        m.abi_version = 2;
        assert!(matches!(
            read(&m),
            Err(Error::AbiVersion {
                found: 2,
                expected: 1
            })
        ));
    }

    #[test]
    fn null_pointers() {
        let mut m = model(&[], &[]);
        m.num_inputs = 1;
        m.inputs = ptr::null();
        assert!(reason(read(&m)).contains("null input array"));

        let mut t = tensor(X, 1, &[1]);
        t.name = ptr::null();
        let ins = [t];
        assert!(reason(read(&model(&ins, &[]))).contains("null name"));

        let mut t = tensor(X, 1, &[1]);
        t.shape = ptr::null();
        let ins = [t];
        assert!(reason(read(&model(&ins, &[]))).contains("null shape"));

        // A scalar may have a null shape: there is nothing to read.
        let mut t = tensor(X, 1, &[]);
        t.shape = ptr::null();
        let ins = [t];
        assert!(read(&model(&ins, &[])).is_ok());

        // Missing producer is tolerated: it is informational only.
        let mut m = model(&[], &[]);
        m.producer = ptr::null();
        assert_eq!(read(&m).unwrap().producer, "");
    }

    #[test]
    fn bad_tensors() {
        let ins = [tensor(X, 10, &[1])];
        assert!(reason(read(&model(&ins, &[]))).contains("unsupported dtype code 10"));

        let mut t = tensor(X, 1, &[1]);
        t.rank = -1;
        let ins = [t];
        assert!(reason(read(&model(&ins, &[]))).contains("negative rank"));

        let mut t = tensor(X, 1, &[1]);
        t.rank = 65;
        let ins = [t];
        assert!(reason(read(&model(&ins, &[]))).contains("exceeds 64"));

        let outs = [tensor(Y, 1, &[1, -3])];
        let r = reason(read(&model(&[], &outs)));
        assert!(r.contains("output 0 `y`: negative dimension"), "{r}");

        let outs = [tensor(Y, 1, &[i64::MAX, i64::MAX])];
        assert!(reason(read(&model(&[], &outs))).contains("too large"));
    }

    #[test]
    fn bad_workspace() {
        let mut m = model(&[], &[]);
        m.workspace_align = 48;
        assert!(reason(read(&m)).contains("alignment 48"));
        m.workspace_align = 0;
        assert!(reason(read(&m)).contains("alignment 0"));
        // Under-aligned but valid: rounded up to the ABI minimum.
        m.workspace_align = 16;
        assert_eq!(read(&m).unwrap().workspace_align, 64);
        m.workspace_align = 4096;
        assert_eq!(read(&m).unwrap().workspace_align, 4096);
        m.workspace_size = u64::MAX;
        assert!(reason(read(&m)).contains("workspace size"));
    }
}
