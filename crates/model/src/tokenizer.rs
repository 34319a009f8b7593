//! GPT-2's byte-level BPE tokenizer, through the `tokenizers` crate.
//!
//! **BOS default.** [`Gpt2Tokenizer::encode`] takes `prepend_bos` explicitly; the convenience
//! [`Gpt2Tokenizer::encode_default`] does *not* prepend `<|endoftext|>`, like Hugging Face
//! `transformers` (TransformerLens prepends by default: pass `prepend_bos = true` to get its
//! token ids).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// The text of GPT-2's only special token, used as BOS, EOS and padding.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// A GPT-2 tokenizer.
#[derive(Clone)]
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
    source: PathBuf,
    /// One more than the largest token id.
    id_bound: usize,
}

/// One more than the largest id in `inner`'s vocabulary (special tokens included).
fn id_bound(inner: &Tokenizer) -> usize {
    inner
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&id| id as usize + 1)
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt2Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Gpt2Tokenizer {
    /// Loads `tokenizer.json` from `dir`, or builds the tokenizer from `vocab.json` +
    /// `merges.txt` where there is no `tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_file(&json);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_merges(&vocab, &merges);
        }
        Err(Error::MissingFile {
            path: json,
            what: "the tokenizer (tokenizer.json, or vocab.json + merges.txt)",
        })
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                what: "the tokenizer (tokenizer.json)",
            });
        }
        let bad = |message: String| Error::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        // tokenizers 0.23 panics (`expect("Helper")`) on some malformed decoder sections
        // instead of returning an error (found by the fuzzer, xtask/src/fuzz.rs): JSON syntax
        // is checked here first, and a panic on valid JSON is caught and reported as an error.
        serde_json::from_str::<serde_json::Value>(text).map_err(|e| bad(e.to_string()))?;
        let inner = std::panic::catch_unwind(|| Tokenizer::from_str(text))
            .map_err(|_| {
                bad("the tokenizers crate could not read it (a malformed section)".into())
            })?
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            id_bound: id_bound(&inner),
            inner,
            source: path.to_path_buf(),
        })
    }

    /// Builds GPT-2's byte-level BPE from a vocabulary (`vocab.json`, a.k.a. `encoder.json`)
    /// and merges (`merges.txt`, a.k.a. `vocab.bpe`), with `<|endoftext|>` as a special token.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        for (p, what) in [
            (vocab, "the BPE vocabulary (vocab.json)"),
            (merges, "the BPE merges (merges.txt)"),
        ] {
            if !p.is_file() {
                return Err(Error::MissingFile {
                    path: p.to_path_buf(),
                    what,
                });
            }
        }
        let err = |e: Box<dyn std::error::Error + Send + Sync>| Error::Tokenizer {
            path: vocab.to_path_buf(),
            message: e.to_string(),
        };
        // As in `from_file`, a panic of the tokenizers crate on a malformed file is an error.
        let bpe = std::panic::catch_unwind(|| {
            BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy()).build()
        })
        .map_err(|_| Error::Tokenizer {
            path: merges.to_path_buf(),
            message: "the tokenizers crate could not build the BPE from it and the vocabulary \
                      (a malformed merge?)"
                .into(),
        })?
        .map_err(err)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
        inner
            .add_special_tokens([AddedToken::from(ENDOFTEXT, true)])
            .map_err(err)?;
        Ok(Self {
            id_bound: id_bound(&inner),
            inner,
            source: vocab.to_path_buf(),
        })
    }

    /// Trains a GPT-2-style byte-level BPE on `texts` with the `tokenizers` crate: the 256
    /// byte symbols, then merges of the most frequent pairs (ties broken by pair, so the same
    /// texts give the same tokenizer) until `vocab_size` tokens, `<|endoftext|>` first (id 0).
    ///
    /// # Errors
    /// A vocabulary too small to hold the byte alphabet and the special token, or a training
    /// error from `tokenizers`.
    pub fn train_bpe<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        use tokenizers::models::TrainerWrapper;
        use tokenizers::models::bpe::BpeTrainerBuilder;
        let alphabet = ByteLevel::alphabet();
        if vocab_size < alphabet.len() + 1 {
            return Err(Error::InvalidOption(format!(
                "a byte-level BPE vocabulary needs at least {} tokens (256 bytes and \
                 <|endoftext|>); {vocab_size} asked for",
                alphabet.len() + 1
            )));
        }
        let err = |e: Box<dyn std::error::Error + Send + Sync>| Error::Tokenizer {
            path: PathBuf::from("<training>"),
            message: e.to_string(),
        };
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(ENDOFTEXT, true)])
            .initial_alphabet(alphabet.into_iter().collect())
            .build()
            .into();
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
        inner.train(&mut trainer, texts).map_err(err)?;
        inner
            .add_special_tokens([AddedToken::from(ENDOFTEXT, true)])
            .map_err(err)?;
        Ok(Self {
            id_bound: id_bound(&inner),
            inner,
            source: PathBuf::from("<trained>"),
        })
    }

    /// Wraps an existing `tokenizers` tokenizer.
    pub fn from_tokenizer(inner: Tokenizer) -> Self {
        Self {
            id_bound: id_bound(&inner),
            inner,
            source: PathBuf::from("<in memory>"),
        }
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The number of embeddings a model needs for this tokenizer: one more than its largest
    /// token id, special tokens included (for a well-formed vocabulary, the number of tokens;
    /// a vocabulary with gaps in its ids needs more).
    pub fn vocab_size(&self) -> usize {
        self.id_bound
    }

    /// The id of `<|endoftext|>`, if the vocabulary has it.
    pub fn endoftext_id(&self) -> Option<u32> {
        self.inner.token_to_id(ENDOFTEXT)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer {
            path: self.source.clone(),
            message: e.to_string(),
        }
    }

    /// Runs a call into the `tokenizers` crate, turning its panics into an error naming this
    /// tokenizer's file: tokenizers 0.23 indexes out of bounds on some malformed (but
    /// loadable) normalizers and merges instead of returning an error (found by the fuzzer,
    /// xtask/src/fuzz.rs).
    fn guarded<T>(&self, doing: &str, f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map_err(|_| {
                self.err(format!(
                    "the tokenizers crate failed while {doing} (a malformed tokenizer file?)"
                ))
            })?
            .map_err(|e| self.err(e))
    }

    /// Token ids of `text`, with `<|endoftext|>` first when `prepend_bos`.
    ///
    /// # Errors
    /// [`Error::EmptyPrompt`] when the result has no token; a tokenizer error when BOS is
    /// asked for and the vocabulary has no `<|endoftext|>`.
    pub fn encode(&self, text: &str, prepend_bos: bool) -> Result<Vec<u32>> {
        let enc = self.guarded("encoding", || self.inner.encode(text, false))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if prepend_bos {
            ids.push(self.endoftext_id().ok_or_else(|| {
                self.err("prepend_bos asked for, but the vocabulary has no <|endoftext|>")
            })?);
        }
        ids.extend_from_slice(enc.get_ids());
        if ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        Ok(ids)
    }

    /// Token ids of `text` and the range of tokens that cover the first occurrence of
    /// `substring` (a subject in a prompt), found through the tokenizer's character offsets:
    /// every token that overlaps the substring's bytes, as ROME's `find_token_range` counts
    /// them. With `prepend_bos` the range counts the BOS token.
    ///
    /// # Errors
    /// [`Error::NotInPrompt`] when `substring` is empty or absent, and as [`Self::encode`].
    pub fn encode_with_span(
        &self,
        text: &str,
        substring: &str,
        prepend_bos: bool,
    ) -> Result<(Vec<u32>, std::ops::Range<usize>)> {
        let not_found = || Error::NotInPrompt {
            substring: substring.to_string(),
            text: text.to_string(),
        };
        let start = text
            .find(substring)
            .filter(|_| !substring.is_empty())
            .ok_or_else(not_found)?;
        let end = start + substring.len();
        let enc = self.guarded("encoding", || self.inner.encode(text, false))?;
        let offset = usize::from(prepend_bos);
        let covering: Vec<usize> = enc
            .get_offsets()
            .iter()
            .enumerate()
            .filter(|&(_, &(a, b))| a < end && b > start && b > a)
            .map(|(i, _)| i + offset)
            .collect();
        let (Some(&first), Some(&last)) = (covering.first(), covering.last()) else {
            return Err(not_found());
        };
        Ok((self.encode(text, prepend_bos)?, first..last + 1))
    }

    /// Token ids of `text` without BOS (the `transformers` convention; see the module docs).
    pub fn encode_default(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, false)
    }

    /// The id of `text` if it is exactly one token, else an error naming the tokens it is.
    pub fn single_token(&self, text: &str) -> Result<u32> {
        let ids = self.encode(text, false)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(Error::InvalidOption(format!(
                "{text:?} is not a single token: it encodes to {} tokens {:?}",
                ids.len(),
                self.str_tokens(&ids).unwrap_or_default()
            ))),
        }
    }

    /// Text of a sequence of ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        self.guarded("decoding", || self.inner.decode(ids, false))
    }

    /// Each token decoded on its own, as TransformerLens's `to_str_tokens` does.
    pub fn str_tokens(&self, ids: &[u32]) -> Result<Vec<String>> {
        self.check_ids(ids)?;
        ids.iter()
            .map(|&id| self.guarded("decoding", || self.inner.decode(&[id], false)))
            .collect()
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let n = self.vocab_size();
        match ids.iter().find(|&&id| id as usize >= n) {
            Some(&id) => Err(Error::TokenOutOfRange { id, vocab_size: n }),
            None => Ok(()),
        }
    }

    /// Writes the tokenizer as a `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}
