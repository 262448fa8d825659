//! Strided views: a logical tensor that lives in another tensor's flat
//! buffer, element `[i…]` at `offset + Σ iₖ·strides[k]`.
//!
//! The optimizer composes the pure re-indexing ops exporters put around
//! attention (reshape, transpose, constant-index gather) into one view, so
//! the fused op can read its operands from, and write its result into, the
//! projection GEMMs' buffers instead of going through copy kernels.

use super::tensor::contiguous_strides;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct View {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl View {
    /// The identity view of a contiguous tensor of `shape`.
    pub fn contiguous(shape: &[usize]) -> View {
        View {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// One past the largest buffer index the view touches (0 when empty).
    pub fn extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        let last: usize = self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(n, s)| (n - 1) * s)
            .sum();
        self.offset + last + 1
    }

    /// Buffer index of the `i`-th element in row-major logical order.
    pub fn at(&self, mut i: usize) -> usize {
        let mut o = self.offset;
        for (n, s) in self.shape.iter().zip(&self.strides).rev() {
            o += (i % n) * s;
            i /= n;
        }
        o
    }

    /// Stride of dim `d` as the kernels see it: any stride of a size-1 dim
    /// is as good as another, so those read as `fallback`.
    pub fn stride_or(&self, d: usize, fallback: usize) -> usize {
        if self.shape[d] == 1 {
            fallback
        } else {
            self.strides[d]
        }
    }

    /// `transpose(perm)` of the viewed tensor.
    pub fn transpose(&self, perm: &[usize]) -> View {
        View {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// Element `i` of dim `axis`, which is dropped (a gather with a
    /// constant scalar index).
    pub fn index(&self, axis: usize, i: usize) -> View {
        let mut v = self.clone();
        v.offset += i * v.strides[axis];
        v.shape.remove(axis);
        v.strides.remove(axis);
        v
    }

    /// `reshape(shape)` without copying, when the viewed dims that a new
    /// dim spans are themselves laid out contiguously; `None` otherwise (or
    /// for empty tensors, where nothing is worth absorbing).
    pub fn reshape(&self, shape: &[usize]) -> Option<View> {
        if self.numel() == 0 || shape.iter().product::<usize>() != self.numel() {
            return None;
        }
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(n, _)| **n != 1)
            .map(|(&n, &s)| (n, s))
            .collect();
        let mut strides = vec![0; shape.len()];
        let (mut ni, mut oi) = (0, 0);
        while ni < shape.len() {
            if shape[ni] == 1 {
                ni += 1;
                continue;
            }
            // Grow a group of new dims and one of old dims to equal size.
            let (n0, o0) = (ni, oi);
            let (mut np, mut op) = (shape[ni], old.get(oi)?.0);
            while np != op {
                if np < op {
                    ni += 1;
                    np *= shape.get(ni)?;
                } else {
                    oi += 1;
                    op *= old.get(oi)?.0;
                }
            }
            // The old group must be one contiguous run to be re-split.
            if (o0..oi).any(|j| old[j].1 != old[j + 1].1 * old[j + 1].0) {
                return None;
            }
            let mut s = old[oi].1;
            for t in (n0..=ni).rev() {
                strides[t] = s;
                s *= shape[t];
            }
            ni += 1;
            oi += 1;
        }
        Some(View {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}@{:?}+{}", self.shape, self.strides, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::View;

    #[test]
    fn compose_matches_index_math() {
        // [128, 192] → [128, 3, 8, 8] → index 1 of dim 1 → transpose(1, 0, 2)
        let v = View::contiguous(&[128, 192])
            .reshape(&[128, 3, 8, 8])
            .unwrap();
        let v = v.index(1, 1).transpose(&[1, 0, 2]);
        assert_eq!(v.shape, [8, 128, 8]);
        assert_eq!(v.strides, [8, 192, 1]);
        assert_eq!(v.offset, 64);
        // Merging heads back: [8, 128, 8] transposed to [128, 8, 8] → [128, 64].
        let w = View::contiguous(&[8, 128, 8]).transpose(&[1, 0, 2]);
        assert!(w.reshape(&[128, 64]).is_none());
        let u = View::contiguous(&[128, 64]).reshape(&[128, 8, 8]).unwrap();
        assert_eq!(u.transpose(&[1, 0, 2]).strides, [8, 64, 1]);
        // Size-1 dims anywhere.
        let x = View::contiguous(&[1, 6, 1]).reshape(&[2, 1, 3, 1]).unwrap();
        assert_eq!((x.strides[0], x.strides[2]), (3, 1));
        assert_eq!(
            (0..6).map(|i| x.at(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
    }
}
