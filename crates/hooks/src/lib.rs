//! # burnlens-hooks
//!
//! Hook sets for the one forward pass of [`burnlens_model::Gpt2`]: capture activations into
//! an [`ActivationCache`], intervene ([`Intervention`]: replace, add, zero, scale,
//! mean-ablate, noise, custom) and take gradients at any hook point, on every backend.
//!
//! ```no_run
//! use burnlens_hooks::{HookSet, Intervention, Selector, run_with_cache};
//! use burnlens_model::{BackendKind, TokenBatch, load};
//!
//! let device = BackendKind::Flex.device()?;
//! let lm = load("fixtures/tiny-gpt2", &device)?;
//! let batch = TokenBatch::single(&lm.tokenizer.encode("The Eiffel Tower is in", false)?)?;
//! // Cache every default hook point.
//! let (_logits, cache) = run_with_cache(&lm.model, &batch, Selector::all())?;
//! let pattern = cache.get4("blocks.0.attn.hook_pattern")?; // [batch, heads, q, k]
//! // Zero-ablate head 2 of block 1.
//! let mut hooks = HookSet::new();
//! hooks.intervene(("z", 1), Intervention::zero().heads([2]))?;
//! let ablated = hooks.run(&lm.model, &batch)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod act;
pub mod cache;
pub mod error;
pub mod intervene;
pub mod select;
pub mod set;

pub use act::Act;
pub use burnlens_model::{HookKind, HookPoint, Hooks, IntoHookPoint, NoHooks};
pub use cache::{ActivationCache, ResidMode, ResidOptions, ResidStack};
pub use error::{Error, Result};
pub use intervene::Intervention;
pub use select::{Positions, Selector};
pub use set::{HookSet, RunWithCache, run_with_cache};
