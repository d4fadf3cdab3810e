use crate::error::{shape_err, Result};

/// Shape, strides (in elements) and offset of a tensor view into its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// The same layout starting `offset` elements into the storage.
    pub fn with_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major and dense: the view is one slice of its storage.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        let Some(&size) = self.shape.get(dim) else {
            return Err(shape_err(
                "narrow",
                format!("dim {dim} out of range for shape {:?}", self.shape),
            ));
        };
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(shape_err(
                "narrow",
                format!(
                    "{start}..{} out of range 0..{size} on dim {dim}",
                    start + len
                ),
            ));
        }
        let mut out = self.clone();
        out.shape[dim] = len;
        out.offset += start * self.strides[dim];
        Ok(out)
    }

    pub fn transpose(&self, a: usize, b: usize) -> Result<Self> {
        let rank = self.shape.len();
        if a >= rank || b >= rank {
            return Err(shape_err(
                "transpose",
                format!("dims ({a}, {b}) out of range for rank {rank}"),
            ));
        }
        let mut out = self.clone();
        out.shape.swap(a, b);
        out.strides.swap(a, b);
        Ok(out)
    }

    /// Storage offsets of every element in row-major order of the view.
    pub fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.elem_count();
        let mut index = vec![0usize; self.shape.len()];
        let mut current = self.offset;
        (0..n).map(move |i| {
            if i > 0 {
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    current += self.strides[d];
                    if index[d] < self.shape[d] {
                        break;
                    }
                    current -= self.strides[d] * self.shape[d];
                    index[d] = 0;
                }
            }
            current
        })
    }
}

pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_and_transpose_offsets() {
        let l = Layout::contiguous(&[2, 3]);
        assert!(l.is_contiguous());
        let t = l.transpose(0, 1).unwrap();
        assert!(!t.is_contiguous());
        assert_eq!(t.offsets().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        let n = l.narrow(1, 1, 2).unwrap();
        assert_eq!(n.offsets().collect::<Vec<_>>(), vec![1, 2, 4, 5]);
        assert!(!n.is_contiguous());
        let rows = l.narrow(0, 1, 1).unwrap();
        assert!(rows.is_contiguous());
        assert_eq!(rows.offset(), 3);
        assert!(l.narrow(1, 2, 2).is_err());
        assert!(l.narrow(2, 0, 1).is_err());
    }
}
