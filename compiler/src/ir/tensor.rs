//! Element types, tensor types and constant tensors.
//!
//! nnc computes in f32; int64 and bool exist because shapes, indices and masks
//! need them (mostly folded away at compile time).

use std::fmt;

/// Element type. Discriminants are ONNX `TensorProto.DataType` codes, which the
/// C ABI also uses, so one number means the same thing everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32 = 1,
    I64 = 7,
    Bool = 9,
}

impl DType {
    pub fn onnx_code(self) -> i32 {
        self as i32
    }

    pub fn from_onnx(code: i32) -> Option<DType> {
        match code {
            1 => Some(DType::F32),
            7 => Some(DType::I64),
            9 => Some(DType::Bool),
            _ => None,
        }
    }

    /// Bytes per element in memory (bool is one byte, as in ONNX and C).
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest tensor nnc accepts (16 GiB): anything bigger is almost surely a
/// corrupt or hostile shape, and refusing it keeps size arithmetic in range.
pub const MAX_TENSOR_BYTES: u64 = 16 << 30;

/// A static tensor type: element type plus fixed shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        TensorType { dtype, shape }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Element count; callers validate sizes with [`TensorType::checked_bytes`]
    /// first, so this product cannot overflow for types that reach the IR.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// Byte size, or `None` if it overflows or exceeds [`MAX_TENSOR_BYTES`].
    pub fn checked_bytes(&self) -> Option<u64> {
        let mut n: u64 = self.dtype.size() as u64;
        for &d in &self.shape {
            n = n.checked_mul(d as u64)?;
        }
        (n <= MAX_TENSOR_BYTES).then_some(n)
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        contiguous_strides(&self.shape)
    }
}

pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Element storage of a constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A constant tensor (initializer, folded value, or test data).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the data length matches the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
        let ty = TensorType::new(data.dtype(), shape.clone());
        let bytes = ty
            .checked_bytes()
            .ok_or_else(|| format!("tensor of type {ty} is too large"))?;
        let numel = bytes as usize / ty.dtype.size();
        if numel != data.len() {
            return Err(format!(
                "tensor of shape {:?} needs {} elements but has {}",
                shape,
                numel,
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::F32(v))
    }

    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::I64(v))
    }

    pub fn bool(shape: Vec<usize>, v: Vec<bool>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::Bool(v))
    }

    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: TensorData::F32(vec![x]),
        }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape.clone())
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Values as i64 (shape arithmetic accepts int64 and, leniently, bool).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::Bool(v) => Some(v.iter().map(|&b| b as i64).collect()),
            TensorData::F32(_) => None,
        }
    }

    /// Little-endian bytes, the layout the generated code reads.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &self.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        }
    }
}

/// An f32 attribute that can live in `Eq + Hash` types (ops are e-graph
/// nodes later), compared by bit pattern.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct F32Bits(pub u32);

impl F32Bits {
    pub fn new(x: f32) -> Self {
        F32Bits(x.to_bits())
    }
    pub fn get(self) -> f32 {
        f32::from_bits(self.0)
    }
}

impl From<f32> for F32Bits {
    fn from(x: f32) -> Self {
        F32Bits::new(x)
    }
}

impl fmt::Debug for F32Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

impl fmt::Display for F32Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_sizes() {
        let t = TensorType::new(DType::F32, vec![2, 3, 4]);
        assert_eq!(t.strides(), vec![12, 4, 1]);
        assert_eq!(t.bytes(), 96);
        assert!(TensorType::new(DType::F32, vec![usize::MAX, 2])
            .checked_bytes()
            .is_none());
    }

    #[test]
    fn tensor_length_checked() {
        assert!(Tensor::f32(vec![2, 2], vec![1.0; 3]).is_err());
        assert!(Tensor::f32(vec![2, 2], vec![1.0; 4]).is_ok());
    }
}
