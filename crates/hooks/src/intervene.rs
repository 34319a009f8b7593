//! Interventions: what a hook does to an activation.

use std::fmt;

use burn::tensor::{Tensor, TensorData};
use burnlens_model::{Error as ModelError, HookPoint};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::act::{Act, axis_mask, head_axis, pos_axis};
use crate::select::Positions;

/// A user function run at a hook point; it must return an activation of the same shape.
pub type CustomFn = Box<dyn FnMut(HookPoint, Act) -> Result<Act, String> + Send>;

enum Op {
    Replace(Act),
    Add(Tensor<1>),
    Zero,
    Scale(f64),
    MeanAblate(Option<Act>),
    Noise { std: f64, seed: u64 },
    Custom(CustomFn),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Replace(a) => write!(f, "Replace({:?})", a.dims()),
            Op::Add(v) => write!(f, "Add({:?})", v.dims()),
            Op::Zero => f.write_str("Zero"),
            Op::Scale(s) => write!(f, "Scale({s})"),
            Op::MeanAblate(m) => write!(f, "MeanAblate({:?})", m.as_ref().map(Act::dims)),
            Op::Noise { std, seed } => write!(f, "Noise(std {std}, seed {seed})"),
            Op::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// A change to an activation, optionally restricted to some positions and heads.
///
/// The operation is computed on the whole activation, then kept only inside the region
/// ([`Intervention::at`], [`Intervention::heads`]); elsewhere the activation is unchanged.
/// Positions are the position axis (the query axis for `hook_attn_scores`/`hook_pattern`);
/// heads are the head axis of per-head points (`hook_q/k/v/z/result`, the per-head inputs,
/// scores and pattern).
#[derive(Debug)]
pub struct Intervention {
    op: Op,
    positions: Positions,
    heads: Option<Vec<usize>>,
}

impl Intervention {
    fn new(op: Op) -> Self {
        Self {
            op,
            positions: Positions::All,
            heads: None,
        }
    }

    /// Replace the activation with `value` (same shape), e.g. the clean run's activation in
    /// activation patching.
    pub fn replace(value: impl Into<Act>) -> Self {
        Self::new(Op::Replace(value.into()))
    }

    /// Add `vector` along the last axis at every selected position (a steering vector).
    pub fn add(vector: Tensor<1>) -> Self {
        Self::new(Op::Add(vector))
    }

    /// Set to zero (zero ablation).
    pub fn zero() -> Self {
        Self::new(Op::Zero)
    }

    /// Multiply by `factor`.
    pub fn scale(factor: f64) -> Self {
        Self::new(Op::Scale(factor))
    }

    /// Replace with the mean over the batch axis of the activation itself (mean ablation over
    /// the batch being run).
    pub fn mean_ablate() -> Self {
        Self::new(Op::MeanAblate(None))
    }

    /// Replace with a precomputed mean (e.g. over a reference dataset): the activation's shape
    /// with batch size 1, broadcast over the batch.
    pub fn mean_ablate_with(mean: impl Into<Act>) -> Self {
        Self::new(Op::MeanAblate(Some(mean.into())))
    }

    /// Add Gaussian noise `N(0, std²)`, drawn on the host from `seed` (the same noise on every
    /// backend and every run).
    pub fn noise(std: f64, seed: u64) -> Self {
        Self::new(Op::Noise { std, seed })
    }

    /// Run a function; it must return an activation of the same shape.
    pub fn custom(f: impl FnMut(HookPoint, Act) -> Result<Act, String> + Send + 'static) -> Self {
        Self::new(Op::Custom(Box::new(f)))
    }

    /// Restrict to these positions.
    pub fn at(mut self, positions: impl Into<Positions>) -> Self {
        self.positions = positions.into();
        self
    }

    /// Restrict to these heads.
    pub fn heads(mut self, heads: impl IntoIterator<Item = usize>) -> Self {
        self.heads = Some(heads.into_iter().collect());
        self
    }

    /// Applies the intervention at `point`.
    pub(crate) fn apply(&mut self, point: HookPoint, act: Act) -> Result<Act, ModelError> {
        let new = self.value(point, &act)?;
        if self.positions.is_all() && self.heads.is_none() {
            return Ok(new);
        }
        self.restrict(point, act, new)
    }

    /// The operation's activation everywhere (before positions and heads restrict it).
    fn value(&mut self, point: HookPoint, act: &Act) -> Result<Act, ModelError> {
        let fail = |message: String| ModelError::Hook {
            point: point.to_string(),
            message,
        };
        let dims = act.dims();
        let rank = dims.len();
        Ok(match &mut self.op {
            Op::Replace(v) => {
                if v.dims() != dims {
                    return Err(fail(format!(
                        "replacement has shape {:?}, the activation {dims:?}",
                        v.dims()
                    )));
                }
                v.clone()
            }
            Op::Add(v) => {
                let last = *dims.last().expect("rank >= 3");
                if v.dims()[0] != last {
                    return Err(fail(format!(
                        "added vector has length {}, the activation's last axis {last}",
                        v.dims()[0]
                    )));
                }
                let v = v.clone();
                act.clone().map(
                    |t| t + v.clone().unsqueeze::<3>(),
                    |t| t + v.clone().unsqueeze::<4>(),
                )
            }
            Op::Zero => act.clone().map(|t| t.zeros_like(), |t| t.zeros_like()),
            Op::Scale(s) => {
                let s = *s;
                act.clone().map(|t| t * s, |t| t * s)
            }
            Op::MeanAblate(None) => act.clone().map(
                |t| {
                    let d = t.dims();
                    t.mean_dim(0).expand(d)
                },
                |t| {
                    let d = t.dims();
                    t.mean_dim(0).expand(d)
                },
            ),
            Op::MeanAblate(Some(m)) => {
                let md = m.dims();
                if md.len() != rank || md[0] != 1 || md[1..] != dims[1..] {
                    return Err(fail(format!(
                        "mean has shape {md:?}; expected batch size 1 and otherwise the activation's shape {dims:?}"
                    )));
                }
                match (m, &act) {
                    (Act::R3(m), Act::R3(_)) => {
                        Act::R3(m.clone().expand([dims[0], dims[1], dims[2]]))
                    }
                    (Act::R4(m), Act::R4(_)) => {
                        Act::R4(m.clone().expand([dims[0], dims[1], dims[2], dims[3]]))
                    }
                    _ => unreachable!("ranks checked above"),
                }
            }
            Op::Noise { std, seed } => {
                let n = act.num_elements();
                let noise = gaussian(n, *std, *seed);
                match &act {
                    Act::R3(t) => {
                        let d = t.dims();
                        Act::R3(
                            t.clone() + Tensor::from_data(TensorData::new(noise, d), &t.device()),
                        )
                    }
                    Act::R4(t) => {
                        let d = t.dims();
                        Act::R4(
                            t.clone() + Tensor::from_data(TensorData::new(noise, d), &t.device()),
                        )
                    }
                }
            }
            Op::Custom(f) => {
                let out = f(point, act.clone()).map_err(fail)?;
                if out.dims() != dims {
                    return Err(fail(format!(
                        "custom hook returned shape {:?}, expected {dims:?}",
                        out.dims()
                    )));
                }
                out
            }
        })
    }

    /// `act` with `new` written at the intervention's positions and heads only.
    fn restrict(&self, point: HookPoint, act: Act, new: Act) -> Result<Act, ModelError> {
        let fail = |message: String| ModelError::Hook {
            point: point.to_string(),
            message,
        };
        let dims = act.dims();
        let rank = dims.len();
        let p_axis = pos_axis(point, rank);
        let positions = self
            .positions
            .indices(dims[p_axis])
            .map_err(|e| fail(e.to_string()))?;
        let mut pos_keep = vec![false; dims[p_axis]];
        for p in positions {
            pos_keep[p] = true;
        }
        let mut head_keep = Vec::new();
        let h_axis = match &self.heads {
            None => None,
            Some(heads) => {
                let axis = head_axis(point, rank).ok_or_else(|| {
                    fail("heads were given but this point has no head axis".to_string())
                })?;
                head_keep = vec![false; dims[axis]];
                for &h in heads {
                    if h >= dims[axis] {
                        return Err(fail(format!(
                            "head {h} is out of range for {} heads",
                            dims[axis]
                        )));
                    }
                    head_keep[h] = true;
                }
                Some(axis)
            }
        };
        let keep_pos = |i: usize| pos_keep[i];
        let keep_head = |i: usize| head_keep[i];
        let mut axes: Vec<(usize, &dyn Fn(usize) -> bool)> = vec![(p_axis, &keep_pos)];
        if let Some(a) = h_axis {
            axes.push((a, &keep_head));
        }
        Ok(match (act, new) {
            (Act::R3(old), Act::R3(new)) => {
                let d = old.dims();
                Act::R3(old.mask_where(axis_mask(d, &axes, &new.device()), new))
            }
            (Act::R4(old), Act::R4(new)) => {
                let d = old.dims();
                Act::R4(old.mask_where(axis_mask(d, &axes, &new.device()), new))
            }
            _ => return Err(fail("an intervention changed the activation's rank".into())),
        })
    }
}

/// `n` draws from `U(-scale, scale)` (a seeded `StdRng`).
pub fn uniform(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

/// `n` draws from `N(0, std²)` (Box–Muller on a seeded `StdRng`).
pub fn gaussian(n: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((std * r * theta.cos()) as f32);
        out.push((std * r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}
