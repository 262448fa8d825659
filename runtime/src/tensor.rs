//! Element types and owned, dense tensors.

use std::ffi::c_void;
use std::fmt;

use crate::error::{Error, Result};

/// Element type of a tensor. The discriminants are ONNX
/// `TensorProto.DataType` codes, which is also what the C ABI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum DType {
    F32 = 1,
    I64 = 7,
    /// One byte per element, 0 or 1.
    Bool = 9,
}

impl DType {
    /// The dtype for an ONNX / ABI code, or `None` if nnc does not support it.
    pub fn from_onnx(code: i32) -> Option<DType> {
        match code {
            1 => Some(DType::F32),
            7 => Some(DType::I64),
            9 => Some(DType::Bool),
            _ => None,
        }
    }

    /// The ONNX / ABI code.
    pub fn to_onnx(self) -> i32 {
        self as i32
    }

    /// Bytes per element.
    pub fn size_of(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }

    /// ONNX-style name: `float32`, `int64`, `bool`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::I64 => "int64",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of elements of `shape` and its size in bytes for `dtype`, or an
/// error if either overflows or exceeds what one allocation may hold.
pub(crate) fn checked_sizes(dtype: DType, shape: &[usize]) -> Result<(usize, usize)> {
    let overflow = || Error::ShapeOverflow {
        shape: shape.to_vec(),
    };
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let bytes = numel.checked_mul(dtype.size_of()).ok_or_else(overflow)?;
    if bytes > isize::MAX as usize {
        return Err(overflow());
    }
    Ok((numel, bytes))
}

/// Typed storage: keeps every element naturally aligned so slices can be
/// handed out without unsafe casts, and lets the C side see a dense buffer.
#[derive(Clone, PartialEq)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    /// `u8` rather than `bool`: generated code writes raw bytes, and a Rust
    /// `bool` holding anything but 0 or 1 would be undefined behaviour.
    Bool(Vec<u8>),
}

/// An owned, dense, row-major tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    fn check_len(shape: &[usize], dtype: DType, got: usize) -> Result<()> {
        let (expected, _) = checked_sizes(dtype, shape)?;
        if expected != got {
            return Err(Error::DataLength {
                shape: shape.to_vec(),
                expected,
                got,
            });
        }
        Ok(())
    }

    /// A float32 tensor; `data.len()` must equal the product of `shape`.
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        Self::check_len(shape, DType::F32, data.len())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            data: Data::F32(data),
        })
    }

    /// An int64 tensor; `data.len()` must equal the product of `shape`.
    pub fn from_i64(shape: &[usize], data: Vec<i64>) -> Result<Tensor> {
        Self::check_len(shape, DType::I64, data.len())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            data: Data::I64(data),
        })
    }

    /// A bool tensor; `data.len()` must equal the product of `shape`.
    pub fn from_bool(shape: &[usize], data: Vec<bool>) -> Result<Tensor> {
        Self::check_len(shape, DType::Bool, data.len())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            data: Data::Bool(data.into_iter().map(u8::from).collect()),
        })
    }

    /// A zero-filled (false for bool) tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let (n, _) = checked_sizes(dtype, shape)?;
        let data = match dtype {
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::Bool => Data::Bool(vec![0; n]),
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the data in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size_of()
    }

    /// The elements, if this is a float32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements, if this is an int64 tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i64_mut(&mut self) -> Option<&mut [i64]> {
        match &mut self.data {
            Data::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The raw bytes (0 = false, anything else = true), if this is a bool tensor.
    pub fn as_bool_bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool_bytes_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.data {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The elements as `bool`s, if this is a bool tensor.
    pub fn to_bools(&self) -> Option<Vec<bool>> {
        self.as_bool_bytes()
            .map(|b| b.iter().map(|&x| x != 0).collect())
    }

    /// The data as native-endian bytes, whatever the dtype (e.g. to compare
    /// outputs bit for bit or write them to a file).
    pub fn as_bytes(&self) -> &[u8] {
        let (ptr, len) = (self.as_ptr().cast::<u8>(), self.byte_len());
        // SAFETY: the storage is a live Vec of plain-old-data elements with
        // no padding, `len` bytes long; u8 has alignment 1.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Pointer to the first element, for the C ABI.
    pub(crate) fn as_ptr(&self) -> *const c_void {
        match &self.data {
            Data::F32(v) => v.as_ptr().cast(),
            Data::I64(v) => v.as_ptr().cast(),
            Data::Bool(v) => v.as_ptr().cast(),
        }
    }

    /// Mutable pointer to the first element, for the C ABI.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut c_void {
        match &mut self.data {
            Data::F32(v) => v.as_mut_ptr().cast(),
            Data::I64(v) => v.as_mut_ptr().cast(),
            Data::Bool(v) => v.as_mut_ptr().cast(),
        }
    }
}

impl fmt::Debug for Tensor {
    /// Shape and dtype plus the first few values: tensors can be huge.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 8;
        write!(f, "Tensor({} {:?}", self.dtype(), self.shape)?;
        let more = if self.len() > SHOW { ", ..." } else { "" };
        match &self.data {
            Data::F32(v) => write!(f, " {:?}{more})", &v[..v.len().min(SHOW)]),
            Data::I64(v) => write!(f, " {:?}{more})", &v[..v.len().min(SHOW)]),
            Data::Bool(v) => write!(f, " {:?}{more})", &v[..v.len().min(SHOW)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes() {
        for d in [DType::F32, DType::I64, DType::Bool] {
            assert_eq!(DType::from_onnx(d.to_onnx()), Some(d));
        }
        assert_eq!(DType::from_onnx(1), Some(DType::F32));
        assert_eq!(DType::from_onnx(7), Some(DType::I64));
        assert_eq!(DType::from_onnx(9), Some(DType::Bool));
        for bad in [0, 2, 6, 10, 11, 16, -1, i32::MAX] {
            assert_eq!(DType::from_onnx(bad), None);
        }
        assert_eq!(DType::F32.size_of(), 4);
        assert_eq!(DType::I64.size_of(), 8);
        assert_eq!(DType::Bool.size_of(), 1);
        assert_eq!(DType::Bool.name(), "bool");
        assert_eq!(DType::I64.to_string(), "int64");
    }

    #[test]
    fn constructors_and_accessors() {
        let t = Tensor::from_f32(&[2, 3], (0..6).map(|i| i as f32).collect()).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.len(), 6);
        assert_eq!(t.byte_len(), 24);
        assert_eq!(t.as_f32().unwrap()[5], 5.0);
        assert!(t.as_i64().is_none());
        assert_eq!(t.as_bytes().len(), 24);
        assert_eq!(&t.as_bytes()[4..8], &1.0f32.to_ne_bytes());

        let t = Tensor::from_i64(&[3], vec![1, -2, 3]).unwrap();
        assert_eq!(t.as_i64(), Some(&[1, -2, 3][..]));
        assert!(t.as_f32().is_none());

        let t = Tensor::from_bool(&[2], vec![true, false]).unwrap();
        assert_eq!(t.as_bool_bytes(), Some(&[1u8, 0][..]));
        assert_eq!(t.to_bools(), Some(vec![true, false]));

        // Scalars have rank 0 and one element.
        let t = Tensor::from_f32(&[], vec![7.0]).unwrap();
        assert_eq!(t.len(), 1);
        assert!(!t.is_empty());

        let z = Tensor::zeros(DType::I64, &[2, 0, 4]).unwrap();
        assert!(z.is_empty());
        assert_eq!(z.as_bytes(), &[] as &[u8]);
        let z = Tensor::zeros(DType::F32, &[1, 4]).unwrap();
        assert_eq!(z.as_f32(), Some(&[0.0; 4][..]));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        match Tensor::from_f32(&[2, 2], vec![1.0; 3]) {
            Err(Error::DataLength {
                expected: 4,
                got: 3,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(Tensor::from_bool(&[1], vec![]).is_err());
        assert!(Tensor::from_i64(&[], vec![]).is_err());
    }

    #[test]
    fn huge_shapes_are_errors_not_panics() {
        let huge = [usize::MAX, 2];
        assert!(matches!(
            Tensor::zeros(DType::F32, &huge),
            Err(Error::ShapeOverflow { .. })
        ));
        // Fits in usize as elements, but not as bytes of one allocation.
        assert!(matches!(
            Tensor::zeros(DType::I64, &[usize::MAX / 4]),
            Err(Error::ShapeOverflow { .. })
        ));
        assert!(Tensor::from_f32(&huge, vec![]).is_err());
    }

    #[test]
    fn debug_is_short() {
        let t = Tensor::zeros(DType::F32, &[1000]).unwrap();
        let s = format!("{t:?}");
        assert!(s.len() < 100, "{s}");
        assert!(s.contains("float32 [1000]"), "{s}");
    }
}
