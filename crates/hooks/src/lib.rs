//! # burnlens-hooks
//!
//! Capture and intervention hook sets, the activation cache and gradients at hook points,
//! built on [`burnlens_model::Hooks`]. Not implemented yet: this crate reserves its place in
//! the layering (see docs/ARCHITECTURE.md); issue 3 fills it.

pub use burnlens_model::{HookPoint, Hooks, NoHooks};
