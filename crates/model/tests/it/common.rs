//! Shared helpers for the model crate's integration tests.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use burnlens_model::BackendKind;
use burnlens_model::weights::{RawTensor, read_safetensors};
use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_dir() -> PathBuf {
    root().join("fixtures/tiny-gpt2")
}

/// `reference.json` written by `scripts/reference/reference.py`.
pub fn reference() -> Value {
    let p = root().join("fixtures/reference/tiny-gpt2/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reference.json")).expect("valid JSON")
}

/// The reference logits (`prompt.{i}`, `batch.left`, `batch.right`).
pub fn reference_logits() -> BTreeMap<String, RawTensor> {
    read_safetensors(&root().join("fixtures/reference/tiny-gpt2/logits.safetensors"))
        .expect("logits")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// The devices to test on: ndarray, flex, and wgpu where an adapter exists (see
/// [`burnlens_model::available_devices`]).
pub fn devices() -> Vec<(BackendKind, Device)> {
    burnlens_model::available_devices()
}

/// Rows of a `[rows, cols]` tensor's host copy.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32")
}

/// Max |a - b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub const TOL: f32 = 1e-4;
