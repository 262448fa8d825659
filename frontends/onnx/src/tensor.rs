//! `TensorProto` → [`Tensor`], including external data files.
//!
//! nnc computes in f32, int64 and bool. Narrower integer constants (int32,
//! uint8, ...) are widened to int64 losslessly, since in a model whose inputs
//! are f32/int64/bool they can only feed shape and index arithmetic; other
//! element types are refused by name.

use nnc_compiler::ir::{DType, Tensor, TensorData, TensorType};
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::TensorProto;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// ONNX element type name, as users know it from onnx/numpy.
pub(crate) fn dtype_name(code: i32) -> String {
    let s = match code {
        0 => "undefined",
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17 => "float8e4m3fn",
        18 => "float8e4m3fnuz",
        19 => "float8e5m2",
        20 => "float8e5m2fnuz",
        21 => "uint4",
        22 => "int4",
        23 => "float4e2m1",
        _ => return format!("#{code}"),
    };
    s.to_string()
}

/// The nnc dtype a constant of ONNX type `code` becomes, if any.
pub(crate) fn const_dtype(code: i32) -> Option<DType> {
    match code {
        1 => Some(DType::F32),
        2..=7 | 12 => Some(DType::I64),
        9 => Some(DType::Bool),
        _ => None,
    }
}

/// Bytes per element in `raw_data` for the types [`const_dtype`] accepts.
fn raw_size(code: i32) -> usize {
    match code {
        2 | 3 | 9 => 1,
        4 | 5 => 2,
        1 | 6 | 12 => 4,
        _ => 8,
    }
}

/// Converts a tensor; `base_dir` is where external data may be read from.
/// Errors are plain messages; callers say which tensor or node.
pub(crate) fn from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, String> {
    let code = t.data_type;
    let dtype = const_dtype(code).ok_or_else(|| {
        format!(
            "element type {} is not supported (nnc handles float, int64 and bool)",
            dtype_name(code)
        )
    })?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(
            usize::try_from(d)
                .map_err(|_| format!("dims {:?} contain a negative value", t.dims))?,
        );
    }
    let ty = TensorType::new(dtype, shape.clone());
    let bytes = ty
        .checked_bytes()
        .ok_or_else(|| format!("shape {:?} is too large", t.dims))?;
    let numel = bytes as usize / dtype.size();
    let raw_bytes = numel as u64 * raw_size(code) as u64;

    let external = t.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let ext_buf;
    let raw: Option<&[u8]> = if external {
        ext_buf = read_external(t, base_dir, raw_bytes)?;
        Some(&ext_buf)
    } else if !t.raw_data.is_empty() {
        Some(&t.raw_data)
    } else {
        None
    };

    let data = match raw {
        Some(raw) => {
            if raw.len() as u64 != raw_bytes {
                return Err(format!(
                    "shape {:?} needs {raw_bytes} bytes of {} data, found {}",
                    t.dims,
                    dtype_name(code),
                    raw.len()
                ));
            }
            decode_raw(code, raw)
        }
        None => decode_typed(t, code, numel)?,
    };
    Tensor::new(shape, data)
}

fn decode_raw(code: i32, raw: &[u8]) -> TensorData {
    fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N).map(|c| c.try_into().unwrap_or([0; N]))
    }
    match code {
        1 => TensorData::F32(chunks::<4>(raw).map(f32::from_le_bytes).collect()),
        9 => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        2 => TensorData::I64(raw.iter().map(|&b| b as i64).collect()),
        3 => TensorData::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
        4 => TensorData::I64(
            chunks::<2>(raw)
                .map(|b| u16::from_le_bytes(b) as i64)
                .collect(),
        ),
        5 => TensorData::I64(
            chunks::<2>(raw)
                .map(|b| i16::from_le_bytes(b) as i64)
                .collect(),
        ),
        6 => TensorData::I64(
            chunks::<4>(raw)
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
        ),
        12 => TensorData::I64(
            chunks::<4>(raw)
                .map(|b| u32::from_le_bytes(b) as i64)
                .collect(),
        ),
        _ => TensorData::I64(chunks::<8>(raw).map(i64::from_le_bytes).collect()),
    }
}

/// Decodes the typed repeated fields (`float_data`, `int64_data`, ...).
fn decode_typed(t: &TensorProto, code: i32, numel: usize) -> Result<TensorData, String> {
    let (len, data) = match code {
        1 => (t.float_data.len(), TensorData::F32(t.float_data.clone())),
        7 => (t.int64_data.len(), TensorData::I64(t.int64_data.clone())),
        9 => (
            t.int32_data.len(),
            TensorData::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
        ),
        12 => (
            t.uint64_data.len(),
            TensorData::I64(t.uint64_data.iter().map(|&v| (v as u32) as i64).collect()),
        ),
        _ => (
            t.int32_data.len(),
            TensorData::I64(t.int32_data.iter().map(|&v| v as i64).collect()),
        ),
    };
    if len != numel {
        return Err(format!(
            "shape {:?} needs {numel} elements, found {len}",
            t.dims
        ));
    }
    Ok(data)
}

/// Reads `nbytes` of external data, refusing locations that escape the
/// model's directory (absolute paths, `..`, symlinks pointing elsewhere):
/// a model file must not be able to make nnc read arbitrary files.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, nbytes: u64) -> Result<Vec<u8>, String> {
    let base = base_dir.ok_or(
        "data is stored externally, but the model was loaded from memory without a directory; load it from its file",
    )?;
    if !t.raw_data.is_empty() {
        return Err("external tensor also has raw_data".into());
    }
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for e in &t.external_data {
        let num = || {
            e.value
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("external data {} {:?} is not a number", e.key, e.value))
        };
        match e.key.as_str() {
            "location" => location = Some(e.value.as_str()),
            "offset" => offset = num()?,
            "length" => length = Some(num()?),
            _ => {}
        }
    }
    let loc = location
        .filter(|l| !l.is_empty())
        .ok_or("external data has no 'location'")?;
    let rel = Path::new(loc);
    if !rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location {loc:?} must be a relative path inside the model's directory"
        ));
    }
    let base = base
        .canonicalize()
        .map_err(|e| format!("model directory {}: {e}", base.display()))?;
    let full = base.join(rel);
    let real = full
        .canonicalize()
        .map_err(|e| format!("external data file {loc:?}: {e}"))?;
    if !real.starts_with(&base) {
        return Err(format!(
            "external data location {loc:?} resolves outside the model's directory"
        ));
    }
    if let Some(len) = length {
        if len != nbytes {
            return Err(format!(
                "external data length {len} does not match the {nbytes} bytes the shape needs"
            ));
        }
    }
    let mut f =
        std::fs::File::open(&real).map_err(|e| format!("external data file {loc:?}: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("external data file {loc:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "external data location {loc:?} is not a regular file"
        ));
    }
    if offset
        .checked_add(nbytes)
        .is_none_or(|end| end > meta.len())
    {
        return Err(format!(
            "external data {loc:?}: bytes {offset}..+{nbytes} lie beyond the end of the file ({} bytes)",
            meta.len()
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("external data file {loc:?}: {e}"))?;
    let mut buf = vec![0u8; nbytes as usize];
    f.read_exact(&mut buf)
        .map_err(|e| format!("external data file {loc:?}: {e}"))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(code: i32, dims: &[i64]) -> TensorProto {
        TensorProto {
            data_type: code,
            dims: dims.to_vec(),
            name: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_data() {
        let mut t = proto(1, &[2]);
        t.raw_data = [1.5f32.to_le_bytes(), (-2f32).to_le_bytes()].concat();
        assert_eq!(
            from_proto(&t, None).unwrap().as_f32().unwrap(),
            &[1.5, -2.0]
        );
        let mut t = proto(6, &[3]);
        t.int32_data = vec![1, -2, 3];
        assert_eq!(from_proto(&t, None).unwrap().as_i64().unwrap(), &[1, -2, 3]);
        let mut t = proto(9, &[2]);
        t.raw_data = vec![0, 7];
        assert_eq!(
            from_proto(&t, None).unwrap().as_bool().unwrap(),
            &[false, true]
        );
    }

    #[test]
    fn bad_tensors_are_errors() {
        let mut t = proto(1, &[3]);
        t.float_data = vec![1.0];
        assert!(from_proto(&t, None)
            .unwrap_err()
            .contains("needs 3 elements"));
        let mut t = proto(1, &[1 << 40, 1 << 40]);
        t.raw_data = vec![0; 4];
        assert!(from_proto(&t, None).unwrap_err().contains("too large"));
        assert!(from_proto(&proto(10, &[1]), None)
            .unwrap_err()
            .contains("float16"));
        assert!(from_proto(&proto(1, &[-1]), None)
            .unwrap_err()
            .contains("negative"));
    }
}
