//! # burnlens-datasets
//!
//! Inputs for experiments: clean/corrupted prompt pairs (JSON, JSONL, CSV) and their
//! tokenization with the usual checks; CounterFact, counterfact-tracing and ROME known-facts
//! loaders that validate their records; the factual-recall "dual setting" prompt generator;
//! the model organism's world (invented people, planted facts, held-out templates, corpus);
//! text files cut into context-length rows for activation statistics.
//!
//! Every loader names the file, the record and the field at fault.

pub mod dual;
pub mod error;
pub mod facts;
pub mod organism;
pub mod pairs;
pub mod records;
pub mod text;

pub use dual::{DualConfig, DualForm, DualPrompt, generate_dual, retrieval_document};
pub use error::{Error, Result};
pub use facts::{
    CounterFactRecord, Fact, KnownFact, RequestedRewrite, Target, TracingRecord, load_counterfact,
    load_facts, load_known_facts, load_tracing,
};
pub use organism::{
    CorpusConfig, Evaluation, FactPrompt, Manifest, Person, RELATIONS, Relation, World,
    filler_documents,
};
pub use pairs::{
    DropReason, Dropped, PairOptions, PromptPair, TokenizedPairs, load_pairs, tokenize_pairs,
};
pub use records::Format;
pub use text::{batches, chunk_texts, read_texts};
