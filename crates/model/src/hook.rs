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
/// `Display` and `FromStr` use TransformerLens's names, e.g. `blocks.3.attn.hook_pattern`;
/// [`HookPoint::from_kind`] takes TransformerLens's `(kind, layer)` shorthand (`("resid_pre", 3)`).
/// Shapes follow TransformerLens: `[batch, pos, d_model]` for residual-stream points,
/// `[batch, pos, n_heads, d_head]` for `hook_q/k/v/z`, `[batch, n_heads, query_pos, key_pos]`
/// for `hook_attn_scores`/`hook_pattern`, `[batch, pos, 1]` for the LayerNorm scales.
///
/// The default kinds are TransformerLens's default hook points for GPT-2 ([`HookPoint::all`]);
/// six more ([`HookPoint::on_request`]) are the ones TransformerLens computes only when a flag
/// asks (`use_attn_result`, `use_attn_in`, `use_split_qkv_input`, `use_hook_mlp_in`); burnlens
/// computes them only when a hook set is active on them, so they cost nothing otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings `[batch, pos, d_model]`.
    Embed,
    /// `hook_pos_embed`: positional embeddings `[batch, pos, d_model]`.
    PosEmbed,
    /// `blocks.{l}.hook_resid_pre`.
    ResidPre(usize),
    /// `blocks.{l}.hook_attn_in` (on request): the block input repeated per head,
    /// `[batch, pos, n_heads, d_model]`. While active, `ln1` runs per head (its hooks then have
    /// rank 4 and fire once each for the query, key and value inputs, as in TransformerLens).
    AttnIn(usize),
    /// `blocks.{l}.hook_q_input` (on request): the query input per head,
    /// `[batch, pos, n_heads, d_model]`, taken from `hook_attn_in`'s value.
    QInput(usize),
    /// `blocks.{l}.hook_k_input` (on request): the key input per head.
    KInput(usize),
    /// `blocks.{l}.hook_v_input` (on request): the value input per head.
    VInput(usize),
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
    /// `blocks.{l}.attn.hook_result` (on request): each head's output in the residual basis,
    /// `z · W_O[head]`, `[batch, pos, n_heads, d_model]`; `hook_attn_out` is their sum plus `b_O`.
    Result(usize),
    /// `blocks.{l}.hook_attn_out`.
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid`.
    ResidMid(usize),
    /// `blocks.{l}.hook_mlp_in` (on request): the MLP sublayer's input (a copy of
    /// `hook_resid_mid` that can be changed without changing the residual stream).
    MlpIn(usize),
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
    /// `unembed.hook_in`: the unembedding's input, the final LayerNorm's output
    /// `[batch, pos, d_model]`.
    UnembedIn,
    /// `unembed.hook_out`: the logits `[batch, pos, vocab]`.
    UnembedOut,
}

/// What a hook point is, without its layer: `resid_pre`, `pattern`, `embed`, …
///
/// `Display` and `FromStr` use TransformerLens's shorthand (the names `utils.get_act_name`
/// takes; its aliases `attn`, `attn_logits`, `query`, `key`, `value`, `mlp_pre`, `mlp_post`
/// are accepted too); [`HookKind::at`] places a per-block kind in a block.
///
/// ```
/// use burnlens_model::{HookKind, HookPoint};
///
/// let kind: HookKind = "resid_pre".parse()?;
/// assert_eq!(kind.at(3)?, HookPoint::ResidPre(3));
/// assert_eq!(HookPoint::Pattern(1).kind().to_string(), "pattern");
/// assert_eq!("attn".parse::<HookKind>()?, HookKind::Pattern);
/// # Ok::<(), burnlens_model::UnknownHookPoint>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HookKind {
    /// The kind of [`HookPoint::Embed`].
    Embed,
    /// The kind of [`HookPoint::PosEmbed`].
    PosEmbed,
    /// The kind of [`HookPoint::ResidPre`].
    ResidPre,
    /// The kind of [`HookPoint::AttnIn`].
    AttnIn,
    /// The kind of [`HookPoint::QInput`].
    QInput,
    /// The kind of [`HookPoint::KInput`].
    KInput,
    /// The kind of [`HookPoint::VInput`].
    VInput,
    /// The kind of [`HookPoint::Ln1Scale`].
    Ln1Scale,
    /// The kind of [`HookPoint::Ln1Normalized`].
    Ln1Normalized,
    /// The kind of [`HookPoint::Q`].
    Q,
    /// The kind of [`HookPoint::K`].
    K,
    /// The kind of [`HookPoint::V`].
    V,
    /// The kind of [`HookPoint::AttnScores`].
    AttnScores,
    /// The kind of [`HookPoint::Pattern`].
    Pattern,
    /// The kind of [`HookPoint::Z`].
    Z,
    /// The kind of [`HookPoint::Result`].
    Result,
    /// The kind of [`HookPoint::AttnOut`].
    AttnOut,
    /// The kind of [`HookPoint::ResidMid`].
    ResidMid,
    /// The kind of [`HookPoint::MlpIn`].
    MlpIn,
    /// The kind of [`HookPoint::Ln2Scale`].
    Ln2Scale,
    /// The kind of [`HookPoint::Ln2Normalized`].
    Ln2Normalized,
    /// The kind of [`HookPoint::MlpPre`].
    MlpPre,
    /// The kind of [`HookPoint::MlpPost`].
    MlpPost,
    /// The kind of [`HookPoint::MlpOut`].
    MlpOut,
    /// The kind of [`HookPoint::ResidPost`].
    ResidPost,
    /// The kind of [`HookPoint::LnFinalScale`].
    LnFinalScale,
    /// The kind of [`HookPoint::LnFinalNormalized`].
    LnFinalNormalized,
    /// The kind of [`HookPoint::UnembedIn`].
    UnembedIn,
    /// The kind of [`HookPoint::UnembedOut`].
    UnembedOut,
}

impl HookKind {
    /// Every kind, in forward order.
    pub const ALL: [HookKind; 29] = {
        use HookKind as K;
        [
            K::Embed,
            K::PosEmbed,
            K::ResidPre,
            K::AttnIn,
            K::QInput,
            K::KInput,
            K::VInput,
            K::Ln1Scale,
            K::Ln1Normalized,
            K::Q,
            K::K,
            K::V,
            K::AttnScores,
            K::Pattern,
            K::Z,
            K::Result,
            K::AttnOut,
            K::ResidMid,
            K::MlpIn,
            K::Ln2Scale,
            K::Ln2Normalized,
            K::MlpPre,
            K::MlpPost,
            K::MlpOut,
            K::ResidPost,
            K::LnFinalScale,
            K::LnFinalNormalized,
            K::UnembedIn,
            K::UnembedOut,
        ]
    };

    /// This kind's row of `GLOBAL_KINDS` (name, shorthand, point), if it is outside the blocks.
    fn global(self) -> Option<&'static (&'static str, &'static str, HookPoint)> {
        GLOBAL_KINDS.iter().find(|g| g.2.kind() == self)
    }

    /// This kind's row of `BLOCK_KINDS`, if it is inside the blocks.
    fn block(self) -> Option<&'static BlockKind> {
        BLOCK_KINDS.iter().find(|k| (k.make)(0).kind() == self)
    }

    /// Whether points of this kind are inside a block (and so need a layer).
    pub fn is_per_block(self) -> bool {
        self.global().is_none()
    }

    /// The point of this per-block kind in block `layer`.
    ///
    /// # Errors
    /// A kind outside the blocks (`embed`, `pos_embed`, `ln_final.*`, `unembed_*`).
    pub fn at(self, layer: usize) -> Result<HookPoint, UnknownHookPoint> {
        self.point(Some(layer))
    }

    /// The point of this kind: in block `layer` for a per-block kind, `None` for the others.
    ///
    /// # Errors
    /// A per-block kind without a layer, or a global kind with one.
    pub fn point(self, layer: Option<usize>) -> Result<HookPoint, UnknownHookPoint> {
        let shown = || match layer {
            Some(l) => format!("({:?}, {l})", self.name()),
            None => self.name().to_string(),
        };
        if let Some(g) = self.global() {
            return match layer {
                None => Ok(g.2),
                Some(_) => Err(UnknownHookPoint(format!("{} (no layer)", shown()))),
            };
        }
        let k = self.block().expect("every per-block kind is listed");
        match layer {
            Some(l) => Ok((k.make)(l)),
            None => Err(UnknownHookPoint(format!("{} (needs a layer)", shown()))),
        }
    }

    /// The shorthand, e.g. `"resid_pre"`, `"pattern"`, `"ln1.scale"`, `"embed"`.
    pub fn name(self) -> &'static str {
        self.global()
            .map(|g| g.1)
            .or_else(|| self.block().map(|k| k.short))
            .expect("every kind is listed")
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HookKind {
    type Err = UnknownHookPoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = ALIASES.iter().find(|a| a.0 == s).map_or(s, |a| a.1);
        HookKind::ALL
            .into_iter()
            .find(|k| k.name() == short)
            .ok_or_else(|| {
                UnknownHookPoint(format!(
                    "{s} (not a hook kind; kinds are {})",
                    HookKind::ALL.map(HookKind::name).join(", ")
                ))
            })
    }
}

/// Serialized as its shorthand.
impl serde::Serialize for HookKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A per-block hook kind: its name after `blocks.{l}.`, its shorthand, its constructor and
/// whether TransformerLens computes it by default.
struct BlockKind {
    suffix: &'static str,
    short: &'static str,
    make: fn(usize) -> HookPoint,
    default: bool,
}

const fn bk(
    suffix: &'static str,
    short: &'static str,
    make: fn(usize) -> HookPoint,
    default: bool,
) -> BlockKind {
    BlockKind {
        suffix,
        short,
        make,
        default,
    }
}

/// Every per-block kind, in the order the forward pass reaches them.
const BLOCK_KINDS: [BlockKind; 23] = [
    bk("hook_resid_pre", "resid_pre", HookPoint::ResidPre, true),
    bk("hook_attn_in", "attn_in", HookPoint::AttnIn, false),
    bk("hook_q_input", "q_input", HookPoint::QInput, false),
    bk("hook_k_input", "k_input", HookPoint::KInput, false),
    bk("hook_v_input", "v_input", HookPoint::VInput, false),
    bk("ln1.hook_scale", "ln1.scale", HookPoint::Ln1Scale, true),
    bk(
        "ln1.hook_normalized",
        "ln1.normalized",
        HookPoint::Ln1Normalized,
        true,
    ),
    bk("attn.hook_q", "q", HookPoint::Q, true),
    bk("attn.hook_k", "k", HookPoint::K, true),
    bk("attn.hook_v", "v", HookPoint::V, true),
    bk(
        "attn.hook_attn_scores",
        "attn_scores",
        HookPoint::AttnScores,
        true,
    ),
    bk("attn.hook_pattern", "pattern", HookPoint::Pattern, true),
    bk("attn.hook_z", "z", HookPoint::Z, true),
    bk("attn.hook_result", "result", HookPoint::Result, false),
    bk("hook_attn_out", "attn_out", HookPoint::AttnOut, true),
    bk("hook_resid_mid", "resid_mid", HookPoint::ResidMid, true),
    bk("hook_mlp_in", "mlp_in", HookPoint::MlpIn, false),
    bk("ln2.hook_scale", "ln2.scale", HookPoint::Ln2Scale, true),
    bk(
        "ln2.hook_normalized",
        "ln2.normalized",
        HookPoint::Ln2Normalized,
        true,
    ),
    bk("mlp.hook_pre", "pre", HookPoint::MlpPre, true),
    bk("mlp.hook_post", "post", HookPoint::MlpPost, true),
    bk("hook_mlp_out", "mlp_out", HookPoint::MlpOut, true),
    bk("hook_resid_post", "resid_post", HookPoint::ResidPost, true),
];

/// Points outside the blocks: name, shorthand, point.
const GLOBAL_KINDS: [(&str, &str, HookPoint); 6] = [
    ("hook_embed", "embed", HookPoint::Embed),
    ("hook_pos_embed", "pos_embed", HookPoint::PosEmbed),
    (
        "ln_final.hook_scale",
        "ln_final.scale",
        HookPoint::LnFinalScale,
    ),
    (
        "ln_final.hook_normalized",
        "ln_final.normalized",
        HookPoint::LnFinalNormalized,
    ),
    ("unembed.hook_in", "unembed_in", HookPoint::UnembedIn),
    ("unembed.hook_out", "unembed_out", HookPoint::UnembedOut),
];

/// TransformerLens's aliases for shorthand kinds (`utils.get_act_name`).
const ALIASES: [(&str, &str); 7] = [
    ("attn", "pattern"),
    ("attn_logits", "attn_scores"),
    ("key", "k"),
    ("query", "q"),
    ("value", "v"),
    ("mlp_pre", "pre"),
    ("mlp_post", "post"),
];

impl HookPoint {
    /// The block this point belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            Embed | PosEmbed | LnFinalScale | LnFinalNormalized | UnembedIn | UnembedOut => None,
            ResidPre(l) | AttnIn(l) | QInput(l) | KInput(l) | VInput(l) | Ln1Scale(l)
            | Ln1Normalized(l) | Q(l) | K(l) | V(l) | AttnScores(l) | Pattern(l) | Z(l)
            | Result(l) | AttnOut(l) | ResidMid(l) | MlpIn(l) | Ln2Scale(l) | Ln2Normalized(l)
            | MlpPre(l) | MlpPost(l) | MlpOut(l) | ResidPost(l) => Some(l),
        }
    }

    fn block_kind(&self) -> Option<&'static BlockKind> {
        let l = self.layer()?;
        BLOCK_KINDS.iter().find(|k| (k.make)(l) == *self)
    }

    /// Whether TransformerLens computes this point by default (false for the six on-request
    /// points: `hook_result`, `hook_attn_in`, `hook_q/k/v_input`, `hook_mlp_in`).
    pub fn is_default(&self) -> bool {
        self.block_kind().is_none_or(|k| k.default)
    }

    /// The kind of this point (its shorthand is `kind().to_string()`, e.g. `"resid_pre"`).
    pub fn kind(&self) -> HookKind {
        use HookKind as K;
        use HookPoint as P;
        match *self {
            P::Embed => K::Embed,
            P::PosEmbed => K::PosEmbed,
            P::ResidPre(_) => K::ResidPre,
            P::AttnIn(_) => K::AttnIn,
            P::QInput(_) => K::QInput,
            P::KInput(_) => K::KInput,
            P::VInput(_) => K::VInput,
            P::Ln1Scale(_) => K::Ln1Scale,
            P::Ln1Normalized(_) => K::Ln1Normalized,
            P::Q(_) => K::Q,
            P::K(_) => K::K,
            P::V(_) => K::V,
            P::AttnScores(_) => K::AttnScores,
            P::Pattern(_) => K::Pattern,
            P::Z(_) => K::Z,
            P::Result(_) => K::Result,
            P::AttnOut(_) => K::AttnOut,
            P::ResidMid(_) => K::ResidMid,
            P::MlpIn(_) => K::MlpIn,
            P::Ln2Scale(_) => K::Ln2Scale,
            P::Ln2Normalized(_) => K::Ln2Normalized,
            P::MlpPre(_) => K::MlpPre,
            P::MlpPost(_) => K::MlpPost,
            P::MlpOut(_) => K::MlpOut,
            P::ResidPost(_) => K::ResidPost,
            P::LnFinalScale => K::LnFinalScale,
            P::LnFinalNormalized => K::LnFinalNormalized,
            P::UnembedIn => K::UnembedIn,
            P::UnembedOut => K::UnembedOut,
        }
    }

    /// The point of shorthand `kind` at `layer`, as TransformerLens's `get_act_name` reads
    /// it: `("resid_pre", Some(3))` is `blocks.3.hook_resid_pre`, `("embed", None)` is
    /// `hook_embed`. Kinds are those of [`HookPoint::kind`] plus TransformerLens's aliases
    /// (`attn` = `pattern`, `attn_logits` = `attn_scores`, `query`/`key`/`value`,
    /// `mlp_pre`/`mlp_post`). A full name is accepted too when `layer` is `None`.
    ///
    /// # Errors
    /// An unknown kind, a per-block kind without a layer, or a global kind with one.
    pub fn from_kind(kind: &str, layer: Option<usize>) -> Result<HookPoint, UnknownHookPoint> {
        match (kind.parse::<HookKind>(), layer) {
            (Ok(k), _) => k.point(layer),
            (Err(_), None) => kind.parse(),
            (Err(_), Some(l)) => Err(UnknownHookPoint(format!("({kind:?}, {l})"))),
        }
    }

    /// TransformerLens's default hook points of a model with `n_layers` blocks (23 kinds: the
    /// set TransformerLens 3.9's `run_with_cache` fills for GPT-2), in forward order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        Self::listed(n_layers, |k| k.default)
    }

    /// The six on-request points of every block (`hook_attn_in`, `hook_q/k/v_input`,
    /// `attn.hook_result`, `hook_mlp_in`).
    pub fn on_request(n_layers: usize) -> Vec<HookPoint> {
        Self::listed(n_layers, |k| !k.default)
            .into_iter()
            .filter(|p| !p.is_default())
            .collect()
    }

    /// Every point, default and on-request, in forward order.
    pub fn every(n_layers: usize) -> Vec<HookPoint> {
        Self::listed(n_layers, |_| true)
    }

    fn listed(n_layers: usize, keep: impl Fn(&BlockKind) -> bool) -> Vec<HookPoint> {
        use HookPoint::*;
        let mut v = vec![Embed, PosEmbed];
        for l in 0..n_layers {
            v.extend(BLOCK_KINDS.iter().filter(|k| keep(k)).map(|k| (k.make)(l)));
        }
        v.extend([LnFinalScale, LnFinalNormalized, UnembedIn, UnembedOut]);
        v
    }

    /// Checks that the point exists in a model with `n_layers` blocks.
    ///
    /// # Errors
    /// [`Error::Hook`] naming the point when its layer is out of range.
    pub fn check_layer(&self, n_layers: usize) -> Result<()> {
        match self.layer() {
            Some(l) if l >= n_layers => Err(Error::Hook {
                point: self.to_string(),
                message: format!("layer {l} is out of range: the model has {n_layers} blocks"),
            }),
            _ => Ok(()),
        }
    }
}

impl HookPoint {
    /// The points of a model with `n_layers` blocks that a name pattern selects, in hook order.
    ///
    /// A pattern with `*` (any run of characters) matches among the default points
    /// (`blocks.0.*`, `*.hook_resid_pre`, `*` for all of them); a pattern without one is a
    /// full name, on-request points (`blocks.0.attn.hook_result`) included.
    ///
    /// # Errors
    /// [`Error::Hook`] naming the pattern when it is not a hook point, names a layer out of
    /// range, or matches nothing.
    pub fn matching(pattern: &str, n_layers: usize) -> Result<Vec<HookPoint>> {
        let pattern = pattern.trim();
        let found: Vec<HookPoint> = if pattern.contains('*') {
            HookPoint::all(n_layers)
                .into_iter()
                .filter(|p| glob(pattern, &p.to_string()))
                .collect()
        } else {
            let p: HookPoint = pattern.parse().map_err(|e: UnknownHookPoint| Error::Hook {
                point: pattern.to_string(),
                message: e.to_string(),
            })?;
            p.check_layer(n_layers)?;
            vec![p]
        };
        if found.is_empty() {
            return Err(Error::Hook {
                point: pattern.to_string(),
                message: format!("matches no hook point of this {n_layers}-block model"),
            });
        }
        Ok(found)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// Serialized as its TransformerLens name.
impl serde::Serialize for HookPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.layer(), self.block_kind()) {
            (Some(l), Some(k)) => write!(f, "blocks.{l}.{}", k.suffix),
            _ => f.write_str(
                GLOBAL_KINDS
                    .iter()
                    .find(|g| g.2 == *self)
                    .expect("every global point is listed")
                    .0,
            ),
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
        let unknown = || UnknownHookPoint(s.to_string());
        if let Some(g) = GLOBAL_KINDS.iter().find(|g| g.0 == s) {
            return Ok(g.2);
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, suffix) = rest.split_once('.').ok_or_else(unknown)?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let l: usize = layer.parse().map_err(|_| unknown())?;
        BLOCK_KINDS
            .iter()
            .find(|k| k.suffix == suffix)
            .map(|k| (k.make)(l))
            .ok_or_else(unknown)
    }
}

/// Anything that names a hook point: a [`HookPoint`], a TransformerLens name (`&str`), or the
/// `(kind, layer)` shorthand.
pub trait IntoHookPoint {
    /// The point named.
    ///
    /// # Errors
    /// A name or shorthand that matches no point.
    fn into_hook_point(self) -> Result<HookPoint, UnknownHookPoint>;
}

impl IntoHookPoint for HookPoint {
    fn into_hook_point(self) -> Result<HookPoint, UnknownHookPoint> {
        Ok(self)
    }
}

impl IntoHookPoint for &str {
    fn into_hook_point(self) -> Result<HookPoint, UnknownHookPoint> {
        self.parse()
    }
}

impl IntoHookPoint for &String {
    fn into_hook_point(self) -> Result<HookPoint, UnknownHookPoint> {
        self.parse()
    }
}

impl IntoHookPoint for (HookKind, usize) {
    fn into_hook_point(self) -> Result<HookPoint, UnknownHookPoint> {
        self.0.at(self.1)
    }
}

impl IntoHookPoint for (&str, usize) {
    fn into_hook_point(self) -> Result<HookPoint, UnknownHookPoint> {
        HookPoint::from_kind(self.0, Some(self.1))
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

    /// This set's part in a row-parallel forward ([`RowSplit`]), or `None`, the default: the
    /// set sees the whole batch in one pass. Hook sets written outside burnlens need not
    /// implement it; [`NoHooks`] and burnlens-hooks' `HookSet` do (see
    /// [`Gpt2::forward`](crate::Gpt2::forward)).
    fn row_split(&mut self) -> Option<&mut dyn RowSplit> {
        None
    }
}

/// How a hook set takes part in a row-parallel forward, where a batch's rows run as blocks of
/// rows on separate threads, each through the same forward with its own part of the set.
pub trait RowSplit {
    /// `parts` sets, one for each consecutive block of rows, or `None` when this set must see
    /// the whole batch in one pass. A set may split only if what it does to a row does not
    /// depend on the other rows, and [`RowSplit::join`] must then rebuild what one pass would
    /// have left in it.
    fn split(&mut self, parts: usize) -> Option<Vec<Box<dyn RowPart>>>;

    /// Takes back, in row order, the parts [`RowSplit::split`] made, after their forwards.
    ///
    /// # Errors
    /// Whatever the set reports while merging.
    fn join(&mut self, parts: Vec<Box<dyn RowPart>>) -> Result<()>;
}

/// One block of rows' hook set: any `Send + 'static` [`Hooks`]. A `Box<dyn RowPart>` upcasts
/// to `Box<dyn Any + Send>`, so that [`RowSplit::join`] can take back parts of its own type.
pub trait RowPart: Hooks + std::any::Any + Send {}

impl<T: Hooks + std::any::Any + Send> RowPart for T {}

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
    fn row_split(&mut self) -> Option<&mut dyn RowSplit> {
        Some(self)
    }
}

impl RowSplit for NoHooks {
    fn split(&mut self, parts: usize) -> Option<Vec<Box<dyn RowPart>>> {
        Some((0..parts).map(|_| Box::new(NoHooks) as _).collect())
    }

    fn join(&mut self, _parts: Vec<Box<dyn RowPart>>) -> Result<()> {
        Ok(())
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

/// A tensor rank the forward can offer to hooks (rank 3 or 4).
pub(crate) trait Hookable: Sized {
    /// Runs `hooks` at `point` if it is active (see [`run3`]).
    fn run(self, hooks: &mut dyn Hooks, point: HookPoint) -> Result<Self>;
}

impl Hookable for Tensor<3> {
    fn run(self, hooks: &mut dyn Hooks, point: HookPoint) -> Result<Self> {
        run3(hooks, point, self)
    }
}

impl Hookable for Tensor<4> {
    fn run(self, hooks: &mut dyn Hooks, point: HookPoint) -> Result<Self> {
        run4(hooks, point, self)
    }
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
    fn patterns_select_points() {
        let resid = HookPoint::matching("*.hook_resid_pre", 3).unwrap();
        assert_eq!(resid.len(), 3);
        assert_eq!(resid[2].to_string(), "blocks.2.hook_resid_pre");
        let block0 = HookPoint::matching("blocks.0.*", 3).unwrap();
        // A block's default points: those of a 1-block model less the global ones.
        assert_eq!(
            block0.len(),
            HookPoint::all(1).len() - HookPoint::all(0).len()
        );
        assert!(block0.iter().all(|p| p.layer() == Some(0)));
        assert_eq!(HookPoint::matching("*", 3).unwrap(), HookPoint::all(3));
        let result = HookPoint::matching(" blocks.1.attn.hook_result ", 3).unwrap();
        assert_eq!(result[0].to_string(), "blocks.1.attn.hook_result");
        for bad in [
            "blocks.3.hook_resid_pre",
            "blocks.*.hook_nothing",
            "hook_nope",
        ] {
            let e = HookPoint::matching(bad, 3).unwrap_err().to_string();
            assert!(e.contains(bad.trim()), "{e}");
        }
    }

    #[test]
    fn names_round_trip() {
        let all = HookPoint::all(3);
        assert_eq!(all.len(), 2 + 3 * 17 + 4);
        assert_eq!(HookPoint::on_request(3).len(), 3 * 6);
        for p in HookPoint::every(3) {
            let name = p.to_string();
            assert_eq!(name.parse::<HookPoint>().unwrap(), p, "{name}");
            assert_eq!(p.kind().point(p.layer()).unwrap(), p, "{name}");
            let short = p.kind().to_string();
            assert_eq!(short.parse::<HookKind>().unwrap(), p.kind(), "{short}");
            assert_eq!(HookPoint::from_kind(&short, p.layer()).unwrap(), p);
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

    #[test]
    fn shorthand_and_aliases() {
        use HookPoint::*;
        let cases = [
            (("resid_pre", Some(3)), ResidPre(3)),
            (("attn", Some(1)), Pattern(1)),
            (("attn_logits", Some(0)), AttnScores(0)),
            (("query", Some(2)), Q(2)),
            (("mlp_post", Some(0)), MlpPost(0)),
            (("ln2.scale", Some(4)), Ln2Scale(4)),
            (("result", Some(1)), Result(1)),
            (("embed", None), Embed),
            (("ln_final.scale", None), LnFinalScale),
            (("blocks.2.hook_mlp_in", None), MlpIn(2)),
        ];
        for ((kind, layer), want) in cases {
            assert_eq!(HookPoint::from_kind(kind, layer).unwrap(), want, "{kind}");
        }
        assert_eq!(("z", 5).into_hook_point().unwrap(), Z(5));
        assert_eq!((HookKind::Z, 5).into_hook_point().unwrap(), Z(5));
        assert_eq!(HookKind::ALL.len(), HookPoint::every(1).len());
        assert!(HookKind::ResidPre.is_per_block() && !HookKind::Embed.is_per_block());
        assert!(HookKind::Embed.at(0).is_err() && HookKind::Z.point(None).is_err());
        let err = "resid_sideways"
            .parse::<HookKind>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resid_sideways") && err.contains("resid_pre"),
            "{err}"
        );
        for (kind, layer) in [("resid_pre", None), ("embed", Some(0)), ("nope", Some(1))] {
            assert!(HookPoint::from_kind(kind, layer).is_err(), "{kind}");
        }
        assert!(!Result(0).is_default() && ResidPre(0).is_default() && Embed.is_default());
        let err = ResidPre(7).check_layer(2).unwrap_err().to_string();
        assert!(
            err.contains("blocks.7.hook_resid_pre") && err.contains("2 blocks"),
            "{err}"
        );
    }
}
