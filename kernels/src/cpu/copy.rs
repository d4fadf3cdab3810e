//! Strided copy (CUDA twin: cuda/copy.cu): the dense row-major copy of a strided view, for
//! any element type (the bits are moved). `collapse` is shared with the CUDA launcher, which
//! walks the collapsed dims.

use rayon::prelude::*;

/// The dims of a view with size-1 dims dropped and neighbours merged where dim d steps over
/// exactly one run of dim d+1 (`stride[d] == stride[d+1] * shape[d+1]`): the same elements in
/// the same order, as (size, stride) pairs, outermost first. A dense view becomes one dim of
/// stride 1; a view of one element, no dims. An empty view (a dim of 0) gives `[(0, 1)]`.
pub fn collapse(shape: &[usize], strides: &[usize]) -> Vec<(usize, usize)> {
    assert_eq!(shape.len(), strides.len(), "collapse: rank mismatch");
    if shape.contains(&0) {
        return vec![(0, 1)];
    }
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(shape.len());
    for (&size, &stride) in shape.iter().zip(strides) {
        if size == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(last) if last.1 == stride * size => *last = (last.0 * size, stride),
            _ => dims.push((size, stride)),
        }
    }
    dims
}

/// Elements per rayon task (smaller copies run on the caller).
const PAR_CHUNK: usize = 1 << 16;

/// `dst[i]` = the element of the view (`shape`, `strides` in elements, first element at
/// `src[offset]`) at row-major index `i`; `dst` holds exactly the view's elements.
pub fn copy_strided<T: Copy + Send + Sync>(
    src: &[T],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
    dst: &mut [T],
) {
    let n: usize = shape.iter().product();
    assert_eq!(
        dst.len(),
        n,
        "copy_strided: dst holds {} of {n} elements",
        dst.len()
    );
    if n == 0 {
        return;
    }
    let dims = collapse(shape, strides);
    let Some((&(inner, inner_stride), outer)) = dims.split_last() else {
        dst[0] = src[offset];
        return;
    };
    // The last element read must be in bounds (each run is checked by indexing too).
    let last = offset + dims.iter().map(|&(d, s)| (d - 1) * s).sum::<usize>();
    assert!(last < src.len(), "copy_strided: view past the end of src");
    // Source offset of the first element of run `r` (row-major over the outer dims).
    let run_start = |mut r: usize| {
        let mut off = offset;
        for &(d, s) in outer.iter().rev() {
            off += (r % d) * s;
            r /= d;
        }
        off
    };
    let copy_runs = |first_run: usize, dst: &mut [T]| {
        for (k, out) in dst.chunks_exact_mut(inner).enumerate() {
            let start = run_start(first_run + k);
            if inner_stride == 1 {
                out.copy_from_slice(&src[start..start + inner]);
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = src[start + j * inner_stride];
                }
            }
        }
    };
    if n <= PAR_CHUNK {
        copy_runs(0, dst);
    } else {
        let runs_per_task = (PAR_CHUNK / inner).max(1);
        dst.par_chunks_mut(runs_per_task * inner)
            .enumerate()
            .for_each(|(t, d)| copy_runs(t * runs_per_task, d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};

    /// The obvious reference: walk every multi-index.
    fn reference(src: &[u32], offset: usize, shape: &[usize], strides: &[usize]) -> Vec<u32> {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|mut i| {
                let mut off = offset;
                for (&d, &s) in shape.iter().zip(strides).rev() {
                    off += (i % d) * s;
                    i /= d;
                }
                src[off]
            })
            .collect()
    }

    fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
        let mut s = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * shape[i + 1];
        }
        s
    }

    #[test]
    fn collapse_merges_and_drops() {
        assert_eq!(collapse(&[2, 3, 4], &[12, 4, 1]), vec![(24, 1)]);
        assert_eq!(collapse(&[1, 1], &[5, 9]), vec![]);
        assert_eq!(collapse(&[3, 0, 2], &[2, 2, 1]), vec![(0, 1)]);
        // A transpose does not merge; a narrowed inner dim keeps its row pitch.
        assert_eq!(collapse(&[4, 3], &[1, 4]), vec![(4, 1), (3, 4)]);
        assert_eq!(collapse(&[5, 1, 6], &[10, 99, 1]), vec![(5, 10), (6, 1)]);
        // Narrowing the outer dim of [a, b, c] keeps b and c mergeable.
        assert_eq!(collapse(&[2, 3, 4], &[24, 4, 1]), vec![(2, 24), (12, 1)]);
    }

    #[test]
    fn random_views_match_reference() {
        let s = seed(0xc0_0001);
        let mut rng = Rng::new(s);
        for case in 0..300 {
            let rank = 1 + (rng.next_u64() % 7) as usize;
            let base: Vec<usize> = (0..rank)
                .map(|_| 1 + (rng.next_u64() % 6) as usize)
                .collect();
            if case % 50 == 0 {
                // A big one, through the parallel path.
                let big = [300, 7, 61];
                let st = contiguous_strides(&big);
                let src: Vec<u32> = (0..big.iter().product::<usize>() as u32).collect();
                let (shape, strides) = ([61, 7, 300], [st[2], st[1], st[0]]);
                let mut dst = vec![u32::MAX; src.len()];
                copy_strided(&src, 0, &shape, &strides, &mut dst);
                assert_eq!(
                    dst,
                    reference(&src, 0, &shape, &strides),
                    "big (seed {s:#x})"
                );
            }
            let strides0 = contiguous_strides(&base);
            let total: usize = base.iter().product();
            let src: Vec<u32> = (0..total as u32)
                .map(|v| v.wrapping_mul(2654435761))
                .collect();
            // A random permutation of dims, then a random narrow of each.
            let mut order: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            let mut offset = 0;
            let (mut shape, mut strides) = (Vec::new(), Vec::new());
            for &d in &order {
                let start = (rng.next_u64() % base[d] as u64) as usize;
                let len = 1 + (rng.next_u64() % (base[d] - start) as u64) as usize;
                offset += start * strides0[d];
                shape.push(len);
                strides.push(strides0[d]);
            }
            let n: usize = shape.iter().product();
            let mut dst = vec![u32::MAX; n];
            copy_strided(&src, offset, &shape, &strides, &mut dst);
            let want = reference(&src, offset, &shape, &strides);
            assert_eq!(
                dst, want,
                "case {case}: {shape:?} {strides:?} +{offset} (seed {s:#x})"
            );
        }
    }

    #[test]
    fn scalar_and_empty_views() {
        let src = [7u16, 8, 9];
        let mut one = [0u16; 1];
        copy_strided(&src, 2, &[1, 1], &[3, 1], &mut one);
        assert_eq!(one, [9]);
        let mut none: [u16; 0] = [];
        copy_strided(&src, 0, &[2, 0], &[1, 2], &mut none);
    }
}
