//! A borrowed, row-major `f32` tensor as handed out by inference engines.

use crate::error::VisionError;

/// A row-major (C order) view of an `f32` tensor: the element at index
/// `[i0, i1, …, in]` is `data[((i0 * s1 + i1) * s2 + …) + in]`.
///
/// The fields are public so a view can be built from any engine's output
/// without copying; decoders validate `shape` against `data.len()` before
/// reading. [`TensorView::new`] validates up front.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Dimensions, outermost first (e.g. `[1, 84, 8400]`).
    pub shape: &'a [usize],
    /// Elements in row-major order; `data.len()` must equal the product of `shape`.
    pub data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// A view after checking that `data.len()` equals the product of `shape`.
    ///
    /// ```
    /// use framepipe_vision::TensorView;
    /// let data = [0.0f32; 6];
    /// assert!(TensorView::new(&[1, 2, 3], &data).is_ok());
    /// assert!(TensorView::new(&[1, 2, 4], &data).is_err());
    /// ```
    pub fn new(shape: &'a [usize], data: &'a [f32]) -> Result<Self, VisionError> {
        let v = Self { shape, data };
        v.check("tensor")?;
        Ok(v)
    }

    /// Number of elements the shape describes, or `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Checks `data.len() == product(shape)`; `decoder` names the caller in the error.
    pub(crate) fn check(&self, decoder: &'static str) -> Result<(), VisionError> {
        match self.numel() {
            Some(n) if n == self.data.len() => Ok(()),
            Some(n) => {
                Err(self.shape_error(decoder, format!("shape holds {n} elements but the data has {}", self.data.len())))
            }
            None => Err(self.shape_error(decoder, "element count overflows".to_string())),
        }
    }

    /// A [`VisionError::TensorShape`] for this view.
    pub(crate) fn shape_error(&self, decoder: &'static str, reason: String) -> VisionError {
        VisionError::TensorShape { decoder, shape: self.shape.to_vec(), reason }
    }

    /// Interprets the view as a matrix `[rows, cols]`: accepts `[rows, cols]`
    /// or `[1, rows, cols]` (batch 1). Validates the data length.
    pub(crate) fn as_matrix(&self, decoder: &'static str) -> Result<(usize, usize), VisionError> {
        self.check(decoder)?;
        match *self.shape {
            [r, c] => Ok((r, c)),
            [1, r, c] => Ok((r, c)),
            [b, _, _] => Err(self.shape_error(decoder, format!("batch size {b} is not supported, expected 1"))),
            _ => Err(self
                .shape_error(decoder, format!("expected rank 3 [1, a, b] (or rank 2), got rank {}", self.shape.len()))),
        }
    }

    /// Interprets the view as `[1, channels, h, w]` and returns `(channels, h, w)`.
    pub(crate) fn as_chw(&self, decoder: &'static str) -> Result<(usize, usize, usize), VisionError> {
        self.check(decoder)?;
        match *self.shape {
            [1, c, h, w] => Ok((c, h, w)),
            [b, _, _, _] => Err(self.shape_error(decoder, format!("batch size {b} is not supported, expected 1"))),
            _ => Err(self.shape_error(decoder, format!("expected rank 4 [1, C, H, W], got rank {}", self.shape.len()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_accepts_batch_one_and_rank_two() {
        let d = [0.0f32; 6];
        assert_eq!(TensorView::new(&[1, 2, 3], &d).unwrap().as_matrix("t").unwrap(), (2, 3));
        assert_eq!(TensorView::new(&[2, 3], &d).unwrap().as_matrix("t").unwrap(), (2, 3));
        let e = TensorView { shape: &[2, 1, 3], data: &d }.as_matrix("t").unwrap_err();
        assert!(e.to_string().contains("batch size 2"), "{e}");
        let e = TensorView { shape: &[6], data: &d }.as_matrix("t").unwrap_err();
        assert!(e.to_string().contains("rank 1"), "{e}");
    }

    #[test]
    fn length_mismatch_is_reported() {
        let d = [0.0f32; 5];
        let e = TensorView::new(&[1, 2, 3], &d).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("6 elements"), "{msg}");
        assert!(msg.contains("has 5"), "{msg}");
        let e = TensorView { shape: &[usize::MAX, 2], data: &d }.as_matrix("t").unwrap_err();
        assert!(e.to_string().contains("overflows"));
    }
}
