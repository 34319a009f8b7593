//! Integration tests of `burnlens-model`, linked as one test binary (one link of burn instead of
//! one per file keeps CI's build time and disk use down). Run one file's tests with a filter:
//! `cargo test -p burnlens-model --test it <module>::`.

mod checkpoints;
mod common;
mod generation;
mod gpt2_tokenizer;
mod logits_parity;
mod training;
