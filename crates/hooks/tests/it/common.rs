//! Helpers shared by the hooks crate's integration tests.
#![allow(dead_code, missing_docs)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use burnlens_model::{Gpt2, load};

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

/// A tensor's values on the host.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Max |a - b|, treating equal infinities (masked attention scores) as equal.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0, f32::max)
}
