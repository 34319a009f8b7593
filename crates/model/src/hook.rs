//! Hook points of the forward pass, named as TransformerLens names them.
//!
//! The forward pass takes a `&mut dyn Hooks` and offers it every activation listed in
//! [`HookPoint`]. A hook set sees the tensor and returns it, possibly changed: that is how
//! capture and intervention work (the `burnlens-hooks` crate builds both on this trait). The
//! forward asks [`Hooks::is_active`] first and skips inactive points, so [`NoHooks`] costs one
//! virtual call per point and nothing else.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// A place in the forward pass where an activation can be read or replaced.
///
/// `Display` and `FromStr` use TransformerLens's names, e.g. `blocks.3.attn.hook_pattern`.
/// Shapes follow TransformerLens: `[batch, pos, d_model]` for residual-stream points,
/// `[batch, pos, n_heads, d_head]` for `hook_q/k/v/z`, `[batch, n_heads, query_pos, key_pos]`
/// for `hook_attn_scores`/`hook_pattern`, `[batch, pos, 1]` for the LayerNorm scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings `[batch, pos, d_model]`.
    Embed,
    /// `hook_pos_embed`: positional embeddings `[batch, pos, d_model]`.
    PosEmbed,
    /// `blocks.{l}.hook_resid_pre`.
    ResidPre(usize),
    /// `blocks.{l}.ln1.hook_scale`: `sqrt(var + eps)`, `[batch, pos, 1]`.
    Ln1Scale(usize),
    /// `blocks.{l}.ln1.hook_normalized`: `(x - mean) / scale`, before the affine map.
    Ln1Normalized(usize),
    /// `blocks.{l}.attn.hook_q`: `[batch, pos, n_heads, d_head]`.
    Q(usize),
    /// `blocks.{l}.attn.hook_k`.
    K(usize),
    /// `blocks.{l}.attn.hook_v`.
    V(usize),
    /// `blocks.{l}.attn.hook_attn_scores`: scaled and masked, `[batch, n_heads, q, k]`.
    AttnScores(usize),
    /// `blocks.{l}.attn.hook_pattern`: softmax of the scores.
    Pattern(usize),
    /// `blocks.{l}.attn.hook_z`: pattern-weighted values, `[batch, pos, n_heads, d_head]`.
    Z(usize),
    /// `blocks.{l}.hook_attn_out`.
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid`.
    ResidMid(usize),
    /// `blocks.{l}.ln2.hook_scale`.
    Ln2Scale(usize),
    /// `blocks.{l}.ln2.hook_normalized`.
    Ln2Normalized(usize),
    /// `blocks.{l}.mlp.hook_pre`: MLP pre-activations `[batch, pos, d_mlp]`.
    MlpPre(usize),
    /// `blocks.{l}.mlp.hook_post`: MLP activations `[batch, pos, d_mlp]`.
    MlpPost(usize),
    /// `blocks.{l}.hook_mlp_out`.
    MlpOut(usize),
    /// `blocks.{l}.hook_resid_post`.
    ResidPost(usize),
    /// `ln_final.hook_scale`.
    LnFinalScale,
    /// `ln_final.hook_normalized`.
    LnFinalNormalized,
}

impl HookPoint {
    /// The block this point belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            Embed | PosEmbed | LnFinalScale | LnFinalNormalized => None,
            ResidPre(l) | Ln1Scale(l) | Ln1Normalized(l) | Q(l) | K(l) | V(l) | AttnScores(l)
            | Pattern(l) | Z(l) | AttnOut(l) | ResidMid(l) | Ln2Scale(l) | Ln2Normalized(l)
            | MlpPre(l) | MlpPost(l) | MlpOut(l) | ResidPost(l) => Some(l),
        }
    }

    /// Every hook point of a model with `n_layers` blocks, in the order the forward pass
    /// reaches them.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        use HookPoint::*;
        let mut v = vec![Embed, PosEmbed];
        for l in 0..n_layers {
            v.extend([
                ResidPre(l),
                Ln1Scale(l),
                Ln1Normalized(l),
                Q(l),
                K(l),
                V(l),
                AttnScores(l),
                Pattern(l),
                Z(l),
                AttnOut(l),
                ResidMid(l),
                Ln2Scale(l),
                Ln2Normalized(l),
                MlpPre(l),
                MlpPost(l),
                MlpOut(l),
                ResidPost(l),
            ]);
        }
        v.extend([LnFinalScale, LnFinalNormalized]);
        v
    }

    fn block_suffix(&self) -> &'static str {
        use HookPoint::*;
        match self {
            ResidPre(_) => "hook_resid_pre",
            Ln1Scale(_) => "ln1.hook_scale",
            Ln1Normalized(_) => "ln1.hook_normalized",
            Q(_) => "attn.hook_q",
            K(_) => "attn.hook_k",
            V(_) => "attn.hook_v",
            AttnScores(_) => "attn.hook_attn_scores",
            Pattern(_) => "attn.hook_pattern",
            Z(_) => "attn.hook_z",
            AttnOut(_) => "hook_attn_out",
            ResidMid(_) => "hook_resid_mid",
            Ln2Scale(_) => "ln2.hook_scale",
            Ln2Normalized(_) => "ln2.hook_normalized",
            MlpPre(_) => "mlp.hook_pre",
            MlpPost(_) => "mlp.hook_post",
            MlpOut(_) => "hook_mlp_out",
            ResidPost(_) => "hook_resid_post",
            Embed => "hook_embed",
            PosEmbed => "hook_pos_embed",
            LnFinalScale => "ln_final.hook_scale",
            LnFinalNormalized => "ln_final.hook_normalized",
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer() {
            Some(l) => write!(f, "blocks.{l}.{}", self.block_suffix()),
            None => f.write_str(self.block_suffix()),
        }
    }
}

/// A string that names no hook point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown hook point {0:?} (expected a TransformerLens name such as blocks.0.hook_resid_pre)"
)]
pub struct UnknownHookPoint(pub String);

impl FromStr for HookPoint {
    type Err = UnknownHookPoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use HookPoint::*;
        let unknown = || UnknownHookPoint(s.to_string());
        match s {
            "hook_embed" => return Ok(Embed),
            "hook_pos_embed" => return Ok(PosEmbed),
            "ln_final.hook_scale" => return Ok(LnFinalScale),
            "ln_final.hook_normalized" => return Ok(LnFinalNormalized),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, suffix) = rest.split_once('.').ok_or_else(unknown)?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let l: usize = layer.parse().map_err(|_| unknown())?;
        let p = match suffix {
            "hook_resid_pre" => ResidPre(l),
            "ln1.hook_scale" => Ln1Scale(l),
            "ln1.hook_normalized" => Ln1Normalized(l),
            "attn.hook_q" => Q(l),
            "attn.hook_k" => K(l),
            "attn.hook_v" => V(l),
            "attn.hook_attn_scores" => AttnScores(l),
            "attn.hook_pattern" => Pattern(l),
            "attn.hook_z" => Z(l),
            "hook_attn_out" => AttnOut(l),
            "hook_resid_mid" => ResidMid(l),
            "ln2.hook_scale" => Ln2Scale(l),
            "ln2.hook_normalized" => Ln2Normalized(l),
            "mlp.hook_pre" => MlpPre(l),
            "mlp.hook_post" => MlpPost(l),
            "hook_mlp_out" => MlpOut(l),
            "hook_resid_post" => ResidPost(l),
            _ => return Err(unknown()),
        };
        Ok(p)
    }
}

/// What the forward pass calls at each hook point.
///
/// Implementors see activations in TransformerLens's shapes and return the tensor to continue
/// with (the same one to merely observe). Returning a tensor of another shape is an error the
/// implementation should report as [`Error::Hook`].
pub trait Hooks {
    /// Whether anything is registered at `point`. The forward skips inactive points.
    fn is_active(&self, point: HookPoint) -> bool;
    /// Called with a rank-3 activation (residual stream, MLP, LayerNorm scale).
    fn hook3(&mut self, point: HookPoint, act: Tensor<3>) -> Result<Tensor<3>>;
    /// Called with a rank-4 activation (per-head q/k/v/z, attention scores and pattern).
    fn hook4(&mut self, point: HookPoint, act: Tensor<4>) -> Result<Tensor<4>>;
}

/// The empty hook set: every point inactive.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {
    fn is_active(&self, _point: HookPoint) -> bool {
        false
    }
    fn hook3(&mut self, _point: HookPoint, act: Tensor<3>) -> Result<Tensor<3>> {
        Ok(act)
    }
    fn hook4(&mut self, _point: HookPoint, act: Tensor<4>) -> Result<Tensor<4>> {
        Ok(act)
    }
}

/// Runs `hooks` at `point` if it is active, checking that the shape is kept.
pub(crate) fn run3(hooks: &mut dyn Hooks, point: HookPoint, x: Tensor<3>) -> Result<Tensor<3>> {
    if !hooks.is_active(point) {
        return Ok(x);
    }
    let dims = x.dims();
    let y = hooks.hook3(point, x)?;
    check_dims(point, &dims, &y.dims())?;
    Ok(y)
}

/// Rank-4 counterpart of [`run3`].
pub(crate) fn run4(hooks: &mut dyn Hooks, point: HookPoint, x: Tensor<4>) -> Result<Tensor<4>> {
    if !hooks.is_active(point) {
        return Ok(x);
    }
    let dims = x.dims();
    let y = hooks.hook4(point, x)?;
    check_dims(point, &dims, &y.dims())?;
    Ok(y)
}

fn check_dims(point: HookPoint, before: &[usize], after: &[usize]) -> Result<()> {
    if before != after {
        return Err(Error::Hook {
            point: point.to_string(),
            message: format!("hook returned shape {after:?}, expected {before:?}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = HookPoint::all(3);
        assert_eq!(all.len(), 2 + 3 * 17 + 2);
        for p in all {
            let name = p.to_string();
            assert_eq!(name.parse::<HookPoint>().unwrap(), p, "{name}");
        }
        assert_eq!(
            HookPoint::Pattern(3).to_string(),
            "blocks.3.attn.hook_pattern"
        );
        assert_eq!(
            HookPoint::ResidPre(0).to_string(),
            "blocks.0.hook_resid_pre"
        );
    }

    #[test]
    fn rejects_unknown_names() {
        for bad in [
            "",
            "blocks.x.hook_resid_pre",
            "blocks.1.hook_nothing",
            "hook_embedding",
            "blocks..hook_z",
            "blocks.+1.hook_resid_pre",
        ] {
            assert!(bad.parse::<HookPoint>().is_err(), "{bad}");
        }
    }
}
