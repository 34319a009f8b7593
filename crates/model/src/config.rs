//! The GPT-2 configuration, read from a Hugging Face `config.json`.

use std::path::Path;

use burn::config::Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The MLP's activation function.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The tanh approximation of GELU: Hugging Face's `gelu_new`, `gelu_pytorch_tanh` and
    /// `gelu_fast` (GPT-2's own activation).
    GeluTanh,
    /// The exact, erf-based GELU (`gelu`).
    GeluErf,
    /// ReLU (`relu`).
    Relu,
}

impl Activation {
    /// Parses a Hugging Face `activation_function` value.
    pub fn from_hf(name: &str) -> Result<Self> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "gelu" => Ok(Self::GeluErf),
            "relu" => Ok(Self::Relu),
            other => Err(Error::UnsupportedConfig {
                key: "activation_function",
                value: other.to_string(),
                expected: "one of gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu",
            }),
        }
    }

    /// The Hugging Face name of this activation.
    pub fn hf_name(&self) -> &'static str {
        match self {
            Self::GeluTanh => "gelu_new",
            Self::GeluErf => "gelu",
            Self::Relu => "relu",
        }
    }
}

/// Shape and numerics of a GPT-2-family model.
///
/// The field names follow Hugging Face's `GPT2Config`; [`Gpt2Config::from_hf_json`] reads a
/// `config.json` and rejects every value this implementation does not support, naming it.
#[derive(Config, Debug, PartialEq)]
pub struct Gpt2Config {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Number of attention heads per block.
    pub n_head: usize,
    /// Width of the residual stream (d_model).
    pub n_embd: usize,
    /// Vocabulary size (rows of `wte`).
    pub vocab_size: usize,
    /// Context length (rows of `wpe`).
    pub n_positions: usize,
    /// Width of the MLP's hidden layer; `None` means `4 * n_embd`.
    #[config(default = "None")]
    pub n_inner: Option<usize>,
    /// Epsilon of every LayerNorm.
    #[config(default = 1e-5)]
    pub layer_norm_epsilon: f64,
    /// The MLP's activation.
    #[config(default = "Activation::GeluTanh")]
    pub activation: Activation,
    /// Divide attention scores by `sqrt(d_head)` (Hugging Face's `scale_attn_weights`).
    #[config(default = true)]
    pub scale_attn_weights: bool,
    /// Also divide attention scores of block `l` by `l + 1`.
    #[config(default = false)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Token id of `<|endoftext|>` used as BOS, if the checkpoint names one.
    #[config(default = "None")]
    pub bos_token_id: Option<u32>,
    /// Token id that ends generation, if the checkpoint names one.
    #[config(default = "None")]
    pub eos_token_id: Option<u32>,
    /// Standard deviation of the random initialisation (Hugging Face's `initializer_range`).
    #[config(default = 0.02)]
    pub initializer_range: f64,
}

impl Gpt2Config {
    /// GPT-2 small's shapes (124M parameters): 12 layers, 12 heads, d_model 768.
    pub fn gpt2_small() -> Self {
        Self::gpt2_shape(12, 12, 768)
    }

    /// GPT-2 medium's shapes (355M parameters): 24 layers, 16 heads, d_model 1024.
    pub fn gpt2_medium() -> Self {
        Self::gpt2_shape(24, 16, 1024)
    }

    /// GPT-2 large's shapes (774M parameters): 36 layers, 20 heads, d_model 1280.
    pub fn gpt2_large() -> Self {
        Self::gpt2_shape(36, 20, 1280)
    }

    /// GPT-2 XL's shapes (1.56B parameters): 48 layers, 25 heads, d_model 1600.
    pub fn gpt2_xl() -> Self {
        Self::gpt2_shape(48, 25, 1600)
    }

    /// A GPT-2 of `n_layer` blocks of `n_head` heads and width `n_embd`, with GPT-2's
    /// vocabulary, context and `<|endoftext|>` as BOS and EOS.
    fn gpt2_shape(n_layer: usize, n_head: usize, n_embd: usize) -> Self {
        Self::new(n_layer, n_head, n_embd, 50257, 1024)
            .with_bos_token_id(Some(50256))
            .with_eos_token_id(Some(50256))
    }

    /// The shapes of a GPT-2 size by name: `small`, `medium`, `large` or `xl`.
    pub fn gpt2_size(name: &str) -> Option<Self> {
        match name {
            "small" => Some(Self::gpt2_small()),
            "medium" => Some(Self::gpt2_medium()),
            "large" => Some(Self::gpt2_large()),
            "xl" => Some(Self::gpt2_xl()),
            _ => None,
        }
    }

    /// Width of each attention head.
    pub fn d_head(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Width of the MLP's hidden layer.
    pub fn d_mlp(&self) -> usize {
        // Saturating: an absurd n_embd is refused by `validate`, not an overflow here (the
        // fuzzer found n_embd = 8·10^18).
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    /// Checks the internal consistency of the shapes.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, value: usize, expected: &'static str| {
            Err(Error::UnsupportedConfig {
                key,
                value: value.to_string(),
                expected,
            })
        };
        // Sane ranges, checked before anything is allocated: a typo such as n_layer = 10^9
        // is an error here, not an hour spent building a map of a billion layers' tensors.
        for (key, value, max, expected) in [
            ("n_layer", self.n_layer, MAX_LAYERS, "at most 1024 layers"),
            ("n_head", self.n_head, MAX_HEADS, "at most 1024 heads"),
            ("n_embd", self.n_embd, MAX_WIDTH, "at most 65536"),
            ("n_inner", self.d_mlp(), 4 * MAX_WIDTH, "at most 262144"),
            (
                "vocab_size",
                self.vocab_size,
                MAX_VOCAB,
                "at most 2^24 tokens",
            ),
            (
                "n_positions",
                self.n_positions,
                MAX_POSITIONS,
                "at most 2^20 positions",
            ),
        ] {
            if value > max {
                return bad(key, value, expected);
            }
        }
        if self.n_layer == 0 {
            return bad("n_layer", 0, "at least 1");
        }
        if self.n_embd == 0 {
            return bad("n_embd", 0, "at least 1");
        }
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return bad("n_head", self.n_head, "a positive divisor of n_embd");
        }
        if self.vocab_size == 0 {
            return bad("vocab_size", 0, "at least 1");
        }
        if self.n_positions == 0 {
            return bad("n_positions", 0, "at least 1");
        }
        if self.n_inner == Some(0) {
            return bad("n_inner", 0, "positive, or null for 4 * n_embd");
        }
        if !self.layer_norm_epsilon.is_finite() || self.layer_norm_epsilon <= 0.0 {
            return Err(Error::UnsupportedConfig {
                key: "layer_norm_epsilon",
                value: self.layer_norm_epsilon.to_string(),
                expected: "a positive, finite number",
            });
        }
        for (key, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(id) = id
                && id as usize >= self.vocab_size
            {
                return bad(key, id as usize, "a token id below vocab_size");
            }
        }
        if self.checked_num_params().is_none_or(|n| n > MAX_PARAMS) {
            return Err(Error::UnsupportedConfig {
                key: "n_layer",
                value: self.n_layer.to_string(),
                expected: "a model of at most 2^40 parameters (n_layer x n_embd^2 and \
                           vocab_size x n_embd are too large together)",
            });
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                what: "the model's config.json",
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf_json(&text).map_err(|e| match e {
            Error::InvalidConfig { message, .. } => Error::InvalidConfig {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses the text of a Hugging Face `config.json` (`GPT2Config`).
    ///
    /// Unsupported values (`model_type` other than `gpt2`, cross-attention, an unknown
    /// activation, untied embeddings, …) are errors that name the key and the value.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        // A UTF-8 byte-order mark (some Windows editors write one) is not JSON.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let v: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let obj = HfKeys(
            v.as_object()
                .ok_or_else(|| invalid("expected a JSON object".into()))?,
        );
        if let Some(mt) = obj.0.get("model_type").and_then(Value::as_str)
            && mt != "gpt2"
        {
            return Err(Error::UnsupportedConfig {
                key: "model_type",
                value: mt.to_string(),
                expected: "gpt2",
            });
        }
        if obj.bool("add_cross_attention", false)? {
            return Err(Error::UnsupportedConfig {
                key: "add_cross_attention",
                value: "true".into(),
                expected: "false (GPT-2 decoder only)",
            });
        }
        if !obj.bool("tie_word_embeddings", true)? {
            return Err(Error::UnsupportedConfig {
                key: "tie_word_embeddings",
                value: "false".into(),
                expected: "true (the LM head is tied to wte)",
            });
        }
        let activation = match obj.0.get("activation_function") {
            None | Some(Value::Null) => Activation::GeluTanh,
            Some(Value::String(s)) => Activation::from_hf(s)?,
            Some(x) => {
                return Err(invalid(format!(
                    "activation_function must be a string, got {x}"
                )));
            }
        };
        let n_positions = match obj.usize("n_positions")? {
            Some(n) => n,
            None => obj.need("n_ctx")?,
        };
        let initializer_range = obj.number("initializer_range", 0.02)?;
        if initializer_range < 0.0 {
            return Err(invalid(format!(
                "initializer_range must be a finite non-negative number, got {initializer_range}"
            )));
        }
        let cfg = Self {
            n_layer: obj.need("n_layer")?,
            n_head: obj.need("n_head")?,
            n_embd: obj.need("n_embd")?,
            vocab_size: obj.need("vocab_size")?,
            n_positions,
            n_inner: obj.usize("n_inner")?,
            layer_norm_epsilon: obj.number("layer_norm_epsilon", 1e-5)?,
            activation,
            scale_attn_weights: obj.bool("scale_attn_weights", true)?,
            scale_attn_by_inverse_layer_idx: obj.bool("scale_attn_by_inverse_layer_idx", false)?,
            bos_token_id: obj.token("bos_token_id")?,
            eos_token_id: obj.token("eos_token_id")?,
            initializer_range,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes this configuration as a Hugging Face `config.json` that `transformers` can read.
    pub fn to_hf_json(&self) -> String {
        let mut v = serde_json::json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_embd": self.n_embd,
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_inner": self.n_inner,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation_function": self.activation.hf_name(),
            "scale_attn_weights": self.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": self.scale_attn_by_inverse_layer_idx,
            "initializer_range": self.initializer_range,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": true,
        });
        if let Some(b) = self.bos_token_id {
            v["bos_token_id"] = b.into();
        }
        if let Some(e) = self.eos_token_id {
            v["eos_token_id"] = e.into();
        }
        serde_json::to_string_pretty(&v).expect("a JSON value always serialises")
    }

    /// Number of parameters of a model with this configuration (the LM head is tied to `wte`).
    ///
    /// # Panics
    /// On a configuration whose count overflows `usize` (one that [`Gpt2Config::validate`]
    /// refuses).
    pub fn num_params(&self) -> usize {
        self.checked_num_params()
            .expect("a validated config's parameter count fits in usize")
    }

    /// [`Gpt2Config::num_params`], or `None` where the count overflows.
    pub fn checked_num_params(&self) -> Option<usize> {
        let (d, m) = (self.n_embd, self.d_mlp());
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let embed = mul(self.vocab_size.checked_add(self.n_positions)?, d)?;
        // ln_1, ln_2; c_attn; attn c_proj; c_fc; mlp c_proj.
        let block = [
            mul(4, d)?,
            mul(mul(d, 3)?, d)?,
            mul(3, d)?,
            mul(d, d)?,
            d,
            mul(d, m)?,
            m,
            mul(m, d)?,
            d,
        ]
        .into_iter()
        .try_fold(0usize, |a, b| a.checked_add(b))?;
        embed
            .checked_add(mul(self.n_layer, block)?)?
            .checked_add(mul(2, d)?)
    }
}

/// The most layers a config may declare.
const MAX_LAYERS: usize = 1024;
/// The most heads.
const MAX_HEADS: usize = 1024;
/// The widest residual stream.
const MAX_WIDTH: usize = 1 << 16;
/// The largest vocabulary.
const MAX_VOCAB: usize = 1 << 24;
/// The longest context.
const MAX_POSITIONS: usize = 1 << 20;
/// The most parameters.
const MAX_PARAMS: usize = 1 << 40;

/// Which of TransformerLens's weight-processing steps to apply (all off by default, which
/// keeps the Hugging Face weights and logits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightProcessing {
    /// Fold each LayerNorm's weight and bias into the linear maps that read its output (and
    /// center those maps' input dimension); the LayerNorms become pure normalisations.
    pub fold_ln: bool,
    /// Subtract the mean over `d_model` from every weight and bias that writes to the
    /// residual stream (`W_E`, `W_pos`, `W_O`, `b_O`, `W_out`, `b_out`).
    pub center_writing_weights: bool,
    /// Subtract the mean over the vocabulary from `W_U` and `b_U`.
    pub center_unembed: bool,
    /// Fold the value biases into the output bias: `b_O += Σ_h b_V[h] · W_O[h]`, `b_V = 0`.
    pub fold_value_biases: bool,
}

impl WeightProcessing {
    /// No processing: the checkpoint's weights as they are (`from_pretrained_no_processing`).
    pub fn none() -> Self {
        Self::default()
    }

    /// All four steps on, as TransformerLens's `from_pretrained` does by default.
    pub fn transformer_lens() -> Self {
        Self {
            fold_ln: true,
            center_writing_weights: true,
            center_unembed: true,
            fold_value_biases: true,
        }
    }

    /// Whether no step is on.
    pub fn is_none(&self) -> bool {
        *self == Self::none()
    }
}

/// An invalid `config.json`, with the message saying which key and why.
fn invalid(message: String) -> Error {
    Error::InvalidConfig {
        path: "config.json".into(),
        message,
    }
}

/// Typed reads of the keys of a Hugging Face `config.json` object; a key that is absent or
/// `null` takes its default, a key of the wrong type is an error naming it.
struct HfKeys<'a>(&'a serde_json::Map<String, Value>);

impl HfKeys<'_> {
    fn usize(&self, key: &str) -> Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| invalid(format!("{key} must be a non-negative integer, got {x}"))),
        }
    }

    fn need(&self, key: &str) -> Result<usize> {
        self.usize(key)?
            .ok_or_else(|| invalid(format!("missing required key {key}")))
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(x) => Err(invalid(format!("{key} must be a boolean, got {x}"))),
        }
    }

    fn number(&self, key: &str, default: f64) -> Result<f64> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .filter(|r| r.is_finite())
                .ok_or_else(|| invalid(format!("{key} must be a finite number, got {x}"))),
        }
    }

    fn token(&self, key: &str) -> Result<Option<u32>> {
        let first = match self.0.get(key) {
            None | Some(Value::Null) => return Ok(None),
            // Some checkpoints list several EOS ids; the first is used.
            Some(Value::Array(a)) => match a.first() {
                None => return Ok(None),
                Some(first) => first,
            },
            Some(x @ Value::Number(_)) => x,
            Some(x) => return Err(invalid(format!("{key} must be a token id, got {x}"))),
        };
        first
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                invalid(format!(
                    "{key} must be a token id (an integer from 0 to 2^32 - 1), got {first}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPT2_HUB: &str = r#"{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
      "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
      "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024,
      "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1,
      "summary_activation": null, "summary_first_dropout": 0.1, "summary_proj_to_labels": true,
      "summary_type": "cls_index", "summary_use_proj": true, "vocab_size": 50257}"#;

    #[test]
    fn reads_the_hub_gpt2_config() {
        let c = Gpt2Config::from_hf_json(GPT2_HUB).unwrap();
        assert_eq!(c, Gpt2Config::gpt2_small());
        assert_eq!(c.d_head(), 64);
        assert_eq!(c.d_mlp(), 3072);
        // GPT-2 small's published parameter count.
        assert_eq!(c.num_params(), 124_439_808);
    }

    #[test]
    fn round_trips_through_hf_json() {
        let c = Gpt2Config::new(2, 4, 64, 1000, 128).with_n_inner(Some(100));
        assert_eq!(Gpt2Config::from_hf_json(&c.to_hf_json()).unwrap(), c);
    }

    #[test]
    fn unsupported_values_are_named() {
        let swap = |from: &str, to: &str| GPT2_HUB.replace(from, to);
        let cases = [
            (swap("\"gelu_new\"", "\"swish\""), "activation_function"),
            (
                swap("\"model_type\": \"gpt2\"", "\"model_type\": \"llama\""),
                "model_type",
            ),
            (swap("\"n_head\": 12", "\"n_head\": 7"), "n_head"),
            (
                swap(
                    "\"vocab_size\": 50257",
                    "\"tie_word_embeddings\": false, \"vocab_size\": 5",
                ),
                "tie_word_embeddings",
            ),
            (swap("\"n_layer\": 12,", ""), "n_layer"),
            // Out of range before anything is allocated (this used to hang building the map
            // of a billion layers' expected tensors).
            (
                swap("\"n_layer\": 12,", "\"n_layer\": 1000000000,"),
                "n_layer = 1000000000: at most 1024 layers",
            ),
            (
                swap(
                    "\"n_embd\": 768, \"n_head\": 12, \"n_layer\": 12,",
                    "\"n_embd\": 65536, \"n_head\": 16, \"n_layer\": 1024, \"n_inner\": 262144,",
                ),
                "at most 2^40 parameters",
            ),
            (
                swap("\"n_embd\": 768,", "\"n_embd\": 0,"),
                "n_embd = 0: at least 1",
            ),
            // Found by the fuzzer: 4 * n_embd overflowed before n_embd's range was checked.
            (
                swap("\"n_embd\": 768,", "\"n_embd\": 8080881342814409704,"),
                "n_embd = 8080881342814409704: at most 65536",
            ),
            (
                swap("\"n_positions\": 1024,", "\"n_positions\": 4000000000,"),
                "n_positions",
            ),
            // A token id beyond u32 used to wrap to another token.
            (
                swap("\"eos_token_id\": 50256", "\"eos_token_id\": 4294967296"),
                "eos_token_id must be a token id (an integer from 0 to 2^32 - 1), got 4294967296",
            ),
            (
                swap("\"eos_token_id\": 50256", "\"eos_token_id\": 50257"),
                "eos_token_id = 50257: a token id below vocab_size",
            ),
            (
                swap("\"layer_norm_epsilon\": 1e-05", "\"layer_norm_epsilon\": 0"),
                "layer_norm_epsilon",
            ),
            (
                swap("\"initializer_range\": 0.02", "\"initializer_range\": -1"),
                "initializer_range",
            ),
        ];
        for (json, key) in cases {
            let err = Gpt2Config::from_hf_json(&json).unwrap_err().to_string();
            assert!(err.contains(key), "error {err:?} should name {key}");
        }
    }
}
