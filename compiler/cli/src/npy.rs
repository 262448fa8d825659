//! .npy input/output through the npyz crate.

use anyhow::{bail, Context, Result};
use nnc::{DType, Tensor};
use npyz::WriterBuilder;
use std::path::Path;

/// Reads a C-order .npy array as a tensor (f32/f64 → f32, i32/i64 → i64, bool).
pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let f = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    if f.order() != npyz::Order::C {
        bail!(
            "{}: Fortran-order arrays are not supported; save with np.ascontiguousarray",
            path.display()
        );
    }
    let shape: Vec<usize> = f.shape().iter().map(|&d| d as usize).collect();
    let descr = f.dtype().descr();
    let t = match descr.trim_matches('\'') {
        "<f4" => Tensor::from_f32(&shape, f.into_vec::<f32>()?)?,
        "<f8" => Tensor::from_f32(
            &shape,
            f.into_vec::<f64>()?.into_iter().map(|x| x as f32).collect(),
        )?,
        "<i8" => Tensor::from_i64(&shape, f.into_vec::<i64>()?)?,
        "<i4" => Tensor::from_i64(
            &shape,
            f.into_vec::<i32>()?.into_iter().map(i64::from).collect(),
        )?,
        "|b1" => Tensor::from_bool(&shape, f.into_vec::<bool>()?)?,
        other => bail!(
            "{}: dtype {other} is not supported (use float32, float64, int32, int64 or bool)",
            path.display()
        ),
    };
    Ok(t)
}

/// Writes a tensor as .npy.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let w = std::io::BufWriter::new(file);
    match t.dtype() {
        DType::F32 => {
            let mut wr = npyz::WriteOptions::<f32>::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            wr.extend(t.as_f32().unwrap().iter().copied())?;
            wr.finish()?;
        }
        DType::I64 => {
            let mut wr = npyz::WriteOptions::<i64>::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            wr.extend(t.as_i64().unwrap().iter().copied())?;
            wr.finish()?;
        }
        DType::Bool => {
            let mut wr = npyz::WriteOptions::<bool>::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            wr.extend(t.to_bools().unwrap())?;
            wr.finish()?;
        }
    }
    Ok(())
}
