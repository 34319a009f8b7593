//! Helpers shared by the experiments crate's integration tests.
#![allow(dead_code, missing_docs)]

use std::path::PathBuf;

use burn::tensor::Device;
use burnlens_model::{Gpt2, load};
use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny GPT-2 fixture on `device`.
pub fn tiny(device: &Device) -> Gpt2 {
    load(root().join("fixtures/tiny-gpt2").to_str().unwrap(), device)
        .unwrap()
        .model
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
