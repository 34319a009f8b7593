//! Circuit discovery on the edge graph (EAP-IG's and ACDC's granularity).
//!
//! Choose a behaviour ([`CircuitTask`]: prompt pairs with an answer and a foil), a metric and
//! an ablation ([`CircuitOptions`]); [`CircuitRun::new`] runs the clean and ablated prompts.
//! Then score every edge at once by gradients ([`CircuitRun::eap`], [`CircuitRun::eap_ig`]),
//! choose the top edges ([`EdgeScores::top`]), prune them to what connects the input to the
//! logits ([`EdgeSet::pruned`]) and measure the circuit by edge patching
//! ([`CircuitRun::evaluate`], [`CircuitRun::faithfulness`], [`CircuitRun::faithfulness_curve`]),
//! or prune the graph edge by edge by patching ([`acdc()`]). Path patching from every sender to
//! chosen receivers is [`path_patch`].
//!
//! ```no_run
//! # fn main() -> burnlens_experiments::Result<()> {
//! use burnlens_experiments::circuit::{CircuitOptions, CircuitRun, CircuitTask};
//! # let (model, tok): (burnlens_model::Gpt2, burnlens_model::Gpt2Tokenizer) = todo!();
//! let task = CircuitTask::from_text(&tok, &[["Jessop Emma lives in", "Ingram Nathan lives in", " Paris", " Nairobi"]])?;
//! let run = CircuitRun::new(&model, &task, &CircuitOptions::default())?;
//! let scores = run.eap_ig(5)?;
//! let circuit = scores.top(run.graph(), 10)?.pruned(run.graph());
//! let faithfulness = run.faithfulness(run.evaluate(&[circuit])?[0])?;
//! # Ok(()) }
//! ```

pub mod acdc;
mod edges;
pub mod graph;
pub mod path;
mod run;
pub mod set;
pub mod task;

pub use acdc::{AcdcOptions, AcdcResult, acdc};
pub use graph::{Dest, Edge, EdgeGraph, Qkv, Source};
pub use path::{PathPatch, path_patch};
pub use run::CircuitRun;
pub use set::{EdgeScores, EdgeSet, FaithPoint, ScoredEdge, log_steps};
pub use task::{Ablation, CircuitMetric, CircuitOptions, CircuitTask};
