//! A hook activation of either rank, and where its position and head axes are.

use burn::tensor::{Bool, Tensor, TensorData};
use burnlens_model::HookPoint;

use crate::error::{Error, Result};

/// An activation at a hook point: rank 3 (`[batch, pos, d]`) or rank 4 (per head, or the
/// attention scores and pattern).
#[derive(Debug, Clone)]
pub enum Act {
    /// `[batch, pos, d]`.
    R3(Tensor<3>),
    /// `[batch, pos, n_heads, d]`, or `[batch, n_heads, query, key]` for scores and pattern.
    R4(Tensor<4>),
}

impl Act {
    /// The shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Act::R3(t) => t.dims().to_vec(),
            Act::R4(t) => t.dims().to_vec(),
        }
    }

    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.dims().iter().product()
    }

    /// The rank-3 tensor.
    ///
    /// # Errors
    /// When the activation has rank 4.
    pub fn r3(&self) -> Result<Tensor<3>> {
        match self {
            Act::R3(t) => Ok(t.clone()),
            Act::R4(t) => Err(Error::Shape(format!(
                "expected a rank-3 activation, found shape {:?}",
                t.dims()
            ))),
        }
    }

    /// The rank-4 tensor.
    ///
    /// # Errors
    /// When the activation has rank 3.
    pub fn r4(&self) -> Result<Tensor<4>> {
        match self {
            Act::R4(t) => Ok(t.clone()),
            Act::R3(t) => Err(Error::Shape(format!(
                "expected a rank-4 activation, found shape {:?}",
                t.dims()
            ))),
        }
    }

    /// The values on the host, row-major, as f32.
    pub fn to_vec(&self) -> Vec<f32> {
        let data = match self {
            Act::R3(t) => t.to_data(),
            Act::R4(t) => t.to_data(),
        };
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .expect("float activations")
    }

    /// The same values without any autodiff graph (what a cache keeps).
    pub fn detached(self) -> Act {
        match self {
            Act::R3(t) => Act::R3(t.inner()),
            Act::R4(t) => Act::R4(t.inner()),
        }
    }

    /// The shape of activations of one point for consecutive blocks of a batch's rows once
    /// stacked along the batch axis (axis 0 at every hook point).
    ///
    /// # Errors
    /// No activation, or shapes (ranks included) that differ off axis 0.
    pub(crate) fn row_stack_dims(acts: &[Act]) -> Result<Vec<usize>> {
        let Some(first) = acts.first() else {
            return Err(Error::Shape("no blocks of rows to stack".into()));
        };
        let mut dims = first.dims();
        for a in &acts[1..] {
            let d = a.dims();
            if d.get(1..) != dims.get(1..) {
                return Err(Error::Shape(format!(
                    "blocks of rows of shapes {:?} and {d:?} cannot be stacked on the batch axis",
                    first.dims()
                )));
            }
            dims[0] += d[0];
        }
        Ok(dims)
    }

    /// Stacks blocks of rows that [`Act::row_stack_dims`] accepted.
    pub(crate) fn cat_rows(acts: Vec<Act>) -> Act {
        let (mut r3, mut r4) = (Vec::new(), Vec::new());
        for a in acts {
            match a {
                Act::R3(t) => r3.push(t),
                Act::R4(t) => r4.push(t),
            }
        }
        if r4.is_empty() {
            Act::R3(Tensor::cat(r3, 0))
        } else {
            Act::R4(Tensor::cat(r4, 0))
        }
    }

    /// Applies a rank-generic map.
    pub(crate) fn map(
        self,
        f3: impl FnOnce(Tensor<3>) -> Tensor<3>,
        f4: impl FnOnce(Tensor<4>) -> Tensor<4>,
    ) -> Act {
        match self {
            Act::R3(t) => Act::R3(f3(t)),
            Act::R4(t) => Act::R4(f4(t)),
        }
    }
}

impl From<Tensor<3>> for Act {
    fn from(t: Tensor<3>) -> Self {
        Act::R3(t)
    }
}

impl From<Tensor<4>> for Act {
    fn from(t: Tensor<4>) -> Self {
        Act::R4(t)
    }
}

/// Axis of positions in an activation at `point` of rank `rank` (the query axis for the
/// attention scores and pattern), as TransformerLens slices positions.
pub fn pos_axis(point: HookPoint, rank: usize) -> usize {
    match point {
        HookPoint::AttnScores(_) | HookPoint::Pattern(_) => 2,
        _ => {
            debug_assert!(rank >= 3);
            1
        }
    }
}

/// Axis of heads, if the activation has one.
pub fn head_axis(point: HookPoint, rank: usize) -> Option<usize> {
    match (point, rank) {
        (HookPoint::AttnScores(_) | HookPoint::Pattern(_), _) => Some(1),
        (_, 4) => Some(2),
        _ => None,
    }
}

/// A boolean mask of `dims`, true where `keep(index along axis a)` holds for every listed axis.
/// Built small (size 1 on the unlisted axes) and broadcast.
pub(crate) fn axis_mask<const D: usize>(
    dims: [usize; D],
    axes: &[(usize, &dyn Fn(usize) -> bool)],
    device: &burn::tensor::Device,
) -> Tensor<D, Bool> {
    let mut small = [1usize; D];
    for (axis, _) in axes {
        small[*axis] = dims[*axis];
    }
    let mut strides = [1usize; D];
    for i in (0..D.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * small[i + 1];
    }
    let n: usize = small.iter().product();
    let values: Vec<bool> = (0..n)
        .map(|flat| {
            axes.iter()
                .all(|(axis, keep)| keep((flat / strides[*axis]) % small[*axis]))
        })
        .collect();
    Tensor::<D, Bool>::from_data(TensorData::new(values, small), device).expand(dims)
}
