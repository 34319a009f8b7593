//! Integration tests of `burnlens-hooks`, linked as one test binary (one link of burn instead of
//! one per file keeps CI's build time and disk use down). Run one file's tests with a filter:
//! `cargo test -p burnlens-hooks --test it <module>::`.

mod behaviour;
mod common;
mod parity;
