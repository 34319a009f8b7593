//! Integration tests of `burnlens-experiments`, linked as one test binary (one link of burn instead of
//! one per file keeps CI's build time and disk use down). Run one file's tests with a filter:
//! `cargo test -p burnlens-experiments --test it <module>::`.

mod attribute_parity;
mod attribution;
mod batched_engine;
mod circuit;
mod common;
mod finetune;
mod head_detectors;
mod heads;
mod lens;
mod memit;
mod organism;
mod patching_parity;
mod prepend_search;
mod probe;
mod rome;
mod steering;
mod tracing_parity;
mod tuned_lens;
