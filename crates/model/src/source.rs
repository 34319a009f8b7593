//! Where a model comes from: a local directory in Hugging Face layout, or a hub id.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};

use crate::batch::{PaddingSide, TokenBatch};
use crate::config::Gpt2Config;
use crate::error::{Error, Result};
use crate::generate::GenerationConfig;
use crate::model::Gpt2;
use crate::tokenizer::Gpt2Tokenizer;
use crate::weights::LoadOptions;

/// A model's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory holding `config.json`, `model.safetensors` (or a sharded index) and
    /// `tokenizer.json` (or `vocab.json` + `merges.txt`).
    Dir(PathBuf),
    /// A Hugging Face hub id such as `gpt2` or `openai-community/gpt2-medium`.
    Hub(String),
}

impl ModelSource {
    /// An existing directory is a [`ModelSource::Dir`]; a string shaped like a hub id
    /// (`name` or `org/name`, no leading `.` or `/`) that is not a directory is a
    /// [`ModelSource::Hub`]; anything else is a directory (that loading will report missing).
    pub fn parse(s: &str) -> Self {
        let p = Path::new(s);
        if p.is_dir() {
            return Self::Dir(p.to_path_buf());
        }
        let hub_like = !s.is_empty()
            && !s.starts_with(['.', '/', '~'])
            && s.matches('/').count() <= 1
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if hub_like {
            Self::Hub(s.to_string())
        } else {
            Self::Dir(p.to_path_buf())
        }
    }

    /// The local directory holding the files, downloading them first for a hub id (with the
    /// `hub` feature).
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            Self::Dir(d) => Ok(d.clone()),
            Self::Hub(id) => hub::fetch(id),
        }
    }
}

/// A model with its tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model.
    pub model: Gpt2,
    /// Its tokenizer.
    pub tokenizer: Gpt2Tokenizer,
    /// The directory the files were read from.
    pub dir: PathBuf,
}

impl LoadedModel {
    /// The token ids of `text`, with no BOS prepended (as `transformers` tokenizes; see
    /// [`Gpt2Tokenizer::encode`] to prepend one).
    ///
    /// # Errors
    /// Tokenizer errors.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, false)
    }

    /// A one-row batch of `text` ([`LoadedModel::encode`]).
    ///
    /// # Errors
    /// A text that encodes to no tokens, and tokenizer errors.
    pub fn batch(&self, text: &str) -> Result<TokenBatch> {
        TokenBatch::single(&self.encode(text)?)
    }

    /// A batch of several texts, padded on the left with `<|endoftext|>` (so that every row's
    /// last position is its last token, where next-token metrics read); positions come from
    /// the mask, so padding leaves the real tokens' logits unchanged.
    ///
    /// # Errors
    /// No texts, a text with no tokens, a tokenizer without `<|endoftext|>`, and tokenizer
    /// errors.
    pub fn batch_of(&self, texts: &[&str]) -> Result<TokenBatch> {
        let rows = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let pad = self
            .tokenizer
            .endoftext_id()
            .ok_or_else(|| Error::Tokenizer {
                path: self.dir.clone(),
                message: "the tokenizer has no <|endoftext|> token to pad with".into(),
            })?;
        TokenBatch::padded(&rows, pad, PaddingSide::Left)
    }

    /// The id of `text`, which must be exactly one token (an answer such as `" Paris"`).
    ///
    /// # Errors
    /// A text that is not one token.
    pub fn token(&self, text: &str) -> Result<u32> {
        self.tokenizer.single_token(text)
    }

    /// The logits of a batch (no hooks).
    ///
    /// # Shapes
    /// - output: `[batch, pos, vocab]`
    ///
    /// # Errors
    /// As [`Gpt2::forward`].
    pub fn logits(&self, batch: &TokenBatch) -> Result<Tensor<3>> {
        self.model.logits(batch)
    }

    /// Greedy continuation of `prompt` by up to `max_new_tokens` tokens, decoded (the prompt
    /// itself not included). [`Gpt2::generate`] takes every other strategy.
    ///
    /// # Errors
    /// As [`Gpt2::generate`], and tokenizer errors.
    pub fn complete(&self, prompt: &str, max_new_tokens: usize) -> Result<String> {
        let config = GenerationConfig {
            max_new_tokens,
            ..GenerationConfig::default()
        };
        let out = self.model.generate(&self.encode(prompt)?, &config)?;
        let ids = out.first().map(|g| g.tokens.as_slice()).unwrap_or_default();
        self.tokenizer.decode(ids)
    }

    /// The device the model's weights live on.
    pub fn device(&self) -> Device {
        self.model.device()
    }
}

/// Loads a model and its tokenizer from a directory or hub id (see [`ModelSource::parse`]).
pub fn load(source: &str, device: &Device) -> Result<LoadedModel> {
    load_from(&ModelSource::parse(source), device)
}

/// Loads a model as [`load`] does, then applies TransformerLens's weight processing
/// (`WeightProcessing::transformer_lens()` is what TransformerLens's `from_pretrained` does;
/// [`load`] is `from_pretrained_no_processing`).
pub fn load_with(
    source: &str,
    device: &Device,
    processing: crate::WeightProcessing,
) -> Result<LoadedModel> {
    let mut lm = load(source, device)?;
    lm.model = lm.model.process_weights(processing);
    Ok(lm)
}

/// Loads a model and its tokenizer from a [`ModelSource`].
pub fn load_from(source: &ModelSource, device: &Device) -> Result<LoadedModel> {
    load_from_with(source, device, LoadOptions::default())
}

/// [`load_from`] with explicit [`LoadOptions`] (e.g. to accept non-finite weights).
pub fn load_from_with(
    source: &ModelSource,
    device: &Device,
    options: LoadOptions,
) -> Result<LoadedModel> {
    let dir = source.resolve()?;
    if dir.is_file() {
        return Err(Error::UnsupportedCheckpoint {
            path: dir,
            message: "is a file; give the directory that holds config.json, model.safetensors \
                      and tokenizer.json (Hugging Face's layout)"
                .into(),
        });
    }
    if !dir.is_dir() {
        return Err(Error::MissingFile {
            path: dir,
            what: "the model directory",
        });
    }
    let config = Gpt2Config::from_hf_file(&dir.join("config.json"))?;
    let weights = weights_path(&dir);
    if !weights.is_file() && dir.join("pytorch_model.bin").is_file() {
        return Err(Error::UnsupportedCheckpoint {
            path: dir.join("pytorch_model.bin"),
            message: "pickle checkpoints are refused (unpickling can run arbitrary code) and \
                      this directory has no model.safetensors; convert it once with \
                      `python -c \"import sys; from transformers import GPT2LMHeadModel as M; \
                      M.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[1])\" DIR`"
                .into(),
        });
    }
    let model = Gpt2::from_safetensors_with(&config, &weights, device, options)?;
    let tokenizer = Gpt2Tokenizer::from_dir(&dir)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::Tokenizer {
            path: dir.clone(),
            message: format!(
                "the tokenizer's largest token id is {} but the model has only {} embeddings \
                 (ids 0 to {})",
                tokenizer.vocab_size() - 1,
                config.vocab_size,
                config.vocab_size - 1
            ),
        });
    }
    Ok(LoadedModel {
        model,
        tokenizer,
        dir,
    })
}

/// `model.safetensors`, or the sharded index where there is one.
fn weights_path(dir: &Path) -> PathBuf {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if !single.is_file() && index.is_file() {
        index
    } else {
        single
    }
}

#[cfg(feature = "hub")]
mod hub {
    use super::*;

    /// Downloads (or finds in the standard HF cache) the files of `id`. Honours `HF_HOME`
    /// and `HF_HUB_CACHE`; with `HF_HUB_OFFLINE=1` only the cache is consulted.
    pub(super) fn fetch(id: &str) -> Result<PathBuf> {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        fetch_with(id, hf_hub::Cache::from_env(), offline)
    }

    /// [`fetch`] with an explicit cache and offline flag.
    pub(super) fn fetch_with(id: &str, cache: hf_hub::Cache, offline: bool) -> Result<PathBuf> {
        let err = |message: String| Error::Hub {
            id: id.to_string(),
            message,
        };
        let get = |file: &str| -> std::result::Result<PathBuf, String> {
            if offline {
                cache.model(id.to_string()).get(file).ok_or_else(|| {
                    format!("{file} is not in the HF cache and HF_HUB_OFFLINE is set")
                })
            } else {
                let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
                    .with_progress(true)
                    .build()
                    .map_err(|e| e.to_string())?;
                api.model(id.to_string())
                    .get(file)
                    .map_err(|e| e.to_string())
            }
        };
        let config = get("config.json").map_err(err)?;
        get("model.safetensors").map_err(err)?;
        if get("tokenizer.json").is_err() {
            get("vocab.json").map_err(err)?;
            get("merges.txt").map_err(err)?;
        }
        Ok(config
            .parent()
            .expect("a cached file has a parent")
            .to_path_buf())
    }
}

#[cfg(not(feature = "hub"))]
mod hub {
    use super::*;

    pub(super) fn fetch(id: &str) -> Result<PathBuf> {
        Err(Error::Hub {
            id: id.to_string(),
            message: format!(
                "this build has no hub support and no directory {id:?} exists. Either rebuild with \
                 `--features hub` (downloads into the standard Hugging Face cache), or download \
                 config.json, model.safetensors and tokenizer.json (e.g. `huggingface-cli download {id}`) \
                 and pass the directory"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(ModelSource::parse("gpt2"), ModelSource::Hub("gpt2".into()));
        assert_eq!(
            ModelSource::parse("openai-community/gpt2-medium"),
            ModelSource::Hub("openai-community/gpt2-medium".into())
        );
        assert_eq!(
            ModelSource::parse("./nowhere"),
            ModelSource::Dir("./nowhere".into())
        );
        assert_eq!(
            ModelSource::parse("/a/b/c"),
            ModelSource::Dir("/a/b/c".into())
        );
        let tmp = std::env::temp_dir();
        assert_eq!(
            ModelSource::parse(tmp.to_str().unwrap()),
            ModelSource::Dir(tmp)
        );
    }

    /// A hub id resolves, offline, from the standard HF cache layout
    /// (`models--org--name/refs/main` → `snapshots/<rev>/…`), and loads.
    #[cfg(feature = "hub")]
    #[test]
    fn hub_id_resolves_offline_from_the_hf_cache() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models--burnlens--tiny-gpt2");
        let snap = repo.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-gpt2");
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fixture.join(f), snap.join(f)).unwrap();
        }
        let cache = hf_hub::Cache::new(root.path().to_path_buf());
        let dir = hub::fetch_with("burnlens/tiny-gpt2", cache.clone(), true).unwrap();
        assert_eq!(dir, snap);
        let lm = load_from(&ModelSource::Dir(dir), &Device::flex()).unwrap();
        assert_eq!(lm.model.config.n_layer, 2);
        let err = hub::fetch_with("burnlens/absent", cache, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    }

    #[cfg(not(feature = "hub"))]
    #[test]
    fn hub_id_without_feature_says_how_to_get_files() {
        let err = ModelSource::Hub("gpt2".into())
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--features hub") && err.contains("model.safetensors"),
            "{err}"
        );
    }
}
