//! Which hook points a hook applies to, and which positions and heads inside them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use burnlens_model::{HookKind, HookPoint, IntoHookPoint};

use crate::error::Result;

/// A set of hook points: one point, a list, a layer range, a predicate, or everything.
///
/// TransformerLens's `names_filter` takes a name, a list of names or a predicate; layer ranges
/// and kinds are shorthands for common predicates.
#[derive(Clone)]
pub struct Selector {
    pred: Arc<dyn Fn(HookPoint) -> bool + Send + Sync>,
    about: String,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({})", self.about)
    }
}

impl Selector {
    /// Every default hook point (what TransformerLens's `run_with_cache` fills). The
    /// on-request points (`hook_result`, `hook_attn_in`, …) are left out: selecting them
    /// switches attention to its slower per-head path. [`Selector::every`] includes them.
    pub fn all() -> Self {
        Self::predicate("every default point", |p| p.is_default())
    }

    /// Every hook point, the on-request ones included.
    pub fn every() -> Self {
        Self::predicate("every point", |_| true)
    }

    /// One point, by [`HookPoint`], TransformerLens name or `(kind, layer)` shorthand.
    ///
    /// # Errors
    /// A name that is not a hook point.
    pub fn point(p: impl IntoHookPoint) -> Result<Self> {
        let p = p.into_hook_point()?;
        Ok(Self::predicate(&p.to_string(), move |q| q == p))
    }

    /// A list of points, by name or [`HookPoint`].
    ///
    /// # Errors
    /// The first name that is not a hook point.
    pub fn points<I, P>(points: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: IntoHookPoint,
    {
        let list = points
            .into_iter()
            .map(IntoHookPoint::into_hook_point)
            .collect::<Result<Vec<_>, _>>()?;
        let about = list
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self::predicate(&format!("[{about}]"), move |q| {
            list.contains(&q)
        }))
    }

    /// The points that satisfy `pred` (TransformerLens's `names_filter` as a function).
    pub fn predicate(
        about: &str,
        pred: impl Fn(HookPoint) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            pred: Arc::new(pred),
            about: about.to_string(),
        }
    }

    /// The default points of the blocks in `layers` (points outside the blocks and
    /// on-request points excluded; combine with [`Selector::and`] for other sets).
    pub fn layers(layers: Range<usize>) -> Self {
        let about = format!("layers {layers:?}");
        Self::predicate(&about, move |p| {
            p.is_default() && p.layer().is_some_and(|l| layers.contains(&l))
        })
    }

    /// The points of one kind ([`HookKind::ResidPre`], [`HookKind::Pattern`], …) in every block.
    pub fn kind(kind: HookKind) -> Self {
        Self::predicate(&format!("kind {kind}"), move |p| p.kind() == kind)
    }

    /// Both this and `other`.
    pub fn and(self, other: Selector) -> Self {
        let about = format!("{} and {}", self.about, other.about);
        Self::predicate(&about, move |p| (self.pred)(p) && (other.pred)(p))
    }

    /// Either this or `other`.
    pub fn or(self, other: Selector) -> Self {
        let about = format!("{} or {}", self.about, other.about);
        Self::predicate(&about, move |p| (self.pred)(p) || (other.pred)(p))
    }

    /// Whether `point` is selected.
    pub fn matches(&self, point: HookPoint) -> bool {
        (self.pred)(point)
    }
}

/// Positions along an activation's position axis (the query axis for scores and patterns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Positions {
    /// Every position.
    #[default]
    All,
    /// A half-open range.
    Range(Range<usize>),
    /// A list; negative indices count from the end (`-1` is the last position).
    List(Vec<isize>),
}

impl Positions {
    /// Just the last position.
    pub fn last() -> Self {
        Positions::List(vec![-1])
    }

    /// The selected indices of an axis of length `len`, in order.
    ///
    /// # Errors
    /// An index outside the axis.
    pub fn indices(&self, len: usize) -> Result<Vec<usize>> {
        let oob = |i: isize| {
            crate::Error::Shape(format!("position {i} is out of range for {len} positions"))
        };
        match self {
            Positions::All => Ok((0..len).collect()),
            Positions::Range(r) => {
                if r.end > len {
                    return Err(oob(r.end as isize - 1));
                }
                Ok(r.clone().collect())
            }
            Positions::List(v) => v
                .iter()
                .map(|&i| {
                    let j = if i < 0 { len as isize + i } else { i };
                    if j < 0 || j >= len as isize {
                        Err(oob(i))
                    } else {
                        Ok(j as usize)
                    }
                })
                .collect(),
        }
    }

    /// Whether every position is selected.
    pub fn is_all(&self) -> bool {
        matches!(self, Positions::All)
    }
}

impl From<Range<usize>> for Positions {
    fn from(r: Range<usize>) -> Self {
        Positions::Range(r)
    }
}

impl From<Vec<usize>> for Positions {
    fn from(v: Vec<usize>) -> Self {
        Positions::List(v.into_iter().map(|i| i as isize).collect())
    }
}
