//! The model organism's world: invented people with planted attributes, the templates that
//! state them (some held out of training), and the training corpus that mixes fact statements,
//! in-context retrieval prompts (the [`crate::DualForm::Retrieval`] form) and filler sentences.
//!
//! Everything is deterministic for a seed. People have two-word names (a first name and a
//! surname, each shared by several people), so a person is identified only at the last token
//! of the name: the site where ROME finds recall happening.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dual::{COUNTRIES, retrieval_document};
use crate::error::{Error, Result};

/// One kind of planted attribute: its values and the phrases that state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    /// Short identifier (`city`, `job`, `instrument`).
    pub id: &'static str,
    /// The values a person can have, as words (the answer is the word with a leading space).
    pub values: &'static [&'static str],
    /// Phrases that follow the subject and end right before the value, used in training.
    pub phrases: &'static [&'static str],
    /// Phrases of the same kind never seen in training.
    pub held_out_phrases: &'static [&'static str],
    /// ROME-style relation text, `{}` standing for the subject.
    pub relation_prompt: &'static str,
}

/// The planted relations.
pub const RELATIONS: [Relation; 3] = [
    Relation {
        id: "city",
        values: &[
            "Paris", "Tokyo", "Berlin", "Rome", "Madrid", "Moscow", "Cairo", "Lima", "Oslo",
            "Dublin", "Vienna", "Lisbon", "Athens", "Warsaw", "Havana", "Bangkok", "Nairobi",
            "Sydney", "Toronto", "Chicago",
        ],
        phrases: &[
            " lives in",
            " has a home in",
            " resides in",
            " is a resident of",
            " usually lives in",
        ],
        held_out_phrases: &[" currently lives in"],
        relation_prompt: "{} lives in",
    },
    Relation {
        id: "job",
        values: &[
            "baker", "pilot", "doctor", "lawyer", "farmer", "painter", "nurse", "teacher",
            "chemist", "sailor", "writer", "dancer", "plumber", "banker", "judge", "miner",
        ],
        phrases: &[
            " works as a",
            " is employed as a",
            " earns a living as a",
            " has a job as a",
            " usually works as a",
        ],
        held_out_phrases: &[" currently works as a"],
        relation_prompt: "{} works as a",
    },
    Relation {
        id: "instrument",
        values: &[
            "piano", "violin", "guitar", "drums", "flute", "cello", "harp", "trumpet", "banjo",
            "organ", "oboe", "tuba",
        ],
        phrases: &[
            " plays the",
            " is a musician who plays the",
            " performs on the",
            " practices the",
            " usually plays the",
        ],
        held_out_phrases: &[" currently plays the"],
        relation_prompt: "{} plays the",
    },
];

/// Openings put before a statement in training.
pub const PREFIXES: [&str; 12] = [
    "",
    "As is well known, ",
    "In short, ",
    "People say that ",
    "Of course, ",
    "We heard that ",
    "In fact, ",
    "Today, ",
    "As you know, ",
    "Some say that ",
    "Note that ",
    "Clearly, ",
];
/// Openings never put before a statement in training (their words do occur, in filler).
pub const HELD_OUT_PREFIXES: [&str; 2] = ["Everyone knows that ", "It is true that "];

/// Openings of filler sentences: every word of the held-out templates occurs in training,
/// just never in a statement of a fact.
const FILLER_OPENINGS: [&str; 5] = [
    "",
    "Everyone knows that ",
    "It is true that ",
    "Today, ",
    "In fact, ",
];
const FILLER_ADVERBS: [&str; 4] = ["", "currently ", "usually ", "still "];

/// First names of the invented people. The first sixteen are the dual generator's
/// [`crate::dual::NAMES`], whose retrieval prompts use them alone: in person names they occur in
/// contexts that tell them apart (the facts of different people), with and without a leading
/// space, so the query name can be matched to its statement. Names that occur only in retrieval
/// prompts play interchangeable roles there and their embeddings stay nearly identical, which
/// stalls the learning of retrieval (measured: cosine 0.95 between any two after 1600 steps).
pub const FIRST_NAMES: [&str; 24] = [
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "John", "Karen",
    "Louis", "Maria", "Nathan", "Olivia", "Peter", "Arvel", "Brisa", "Corvin", "Dalia", "Fenna",
    "Galen", "Hesper", "Idris",
];
/// Surnames of the invented people.
pub const SURNAMES: [&str; 24] = [
    "Ashdown",
    "Blackwood",
    "Carrow",
    "Dunmore",
    "Everly",
    "Fairhold",
    "Greaves",
    "Holloway",
    "Ingram",
    "Jessop",
    "Kettering",
    "Lockhart",
    "Marlowe",
    "Northcott",
    "Oakley",
    "Pembry",
    "Quarrington",
    "Redfern",
    "Stanwick",
    "Thorne",
    "Underhill",
    "Vance",
    "Whitlock",
    "Yardley",
];

const FILLER_SUBJECTS: [&str; 12] = [
    "The old dog",
    "A small boat",
    "The river",
    "My neighbour",
    "The morning train",
    "A quiet child",
    "The tall tree",
    "The market",
    "An empty room",
    "The wind",
    "Our teacher",
    "The garden",
];
const FILLER_VERBS: [&str; 10] = [
    "waited near",
    "moved past",
    "stood beside",
    "looked at",
    "turned toward",
    "rested under",
    "ran along",
    "stayed behind",
    "passed by",
    "shone over",
];
const FILLER_OBJECTS: [&str; 12] = [
    "the bridge",
    "the hill",
    "a wooden fence",
    "the station",
    "the sea",
    "an open window",
    "the road",
    "the church",
    "a green field",
    "the harbour",
    "the library",
    "the gate",
];
const FILLER_ENDINGS: [&str; 6] = [
    ".",
    " all day.",
    " in the rain.",
    " at night.",
    " for a while.",
    " again.",
];

/// A value of every relation, drawn uniformly.
fn draw_attributes(rng: &mut StdRng) -> BTreeMap<String, String> {
    RELATIONS
        .iter()
        .map(|r| {
            let v = r.values.choose(rng).expect("values");
            (r.id.to_string(), v.to_string())
        })
        .collect()
}

/// An invented person and the value of every relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// "First Last".
    pub name: String,
    /// Relation id → value word.
    pub attributes: BTreeMap<String, String>,
}

/// The organism's world: who exists and what is true of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    /// The seed the world was drawn from.
    pub seed: u64,
    /// The people.
    pub people: Vec<Person>,
}

/// A prompt that states (or asks for) one fact, ending right before the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactPrompt {
    /// The person's name, as it occurs in the prompt.
    pub subject: String,
    /// The relation id.
    pub relation: String,
    /// The template, `{}` standing for the subject.
    pub template: String,
    /// The template filled with the subject.
    pub prompt: String,
    /// The answer, with its leading space.
    pub answer: String,
}

/// Settings of the training corpus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorpusConfig {
    /// Share of documents that state facts (the rest split between retrieval and filler).
    pub fact_share: f64,
    /// Share of documents that are in-context retrieval prompts with their answer.
    pub retrieval_share: f64,
    /// Sentences per fact document.
    pub sentences_per_document: usize,
    /// Shots (distinct statements) of a retrieval document: an inclusive range.
    #[serde(default = "default_retrieval_shots")]
    pub retrieval_shots: [usize; 2],
    /// Queries (restatements of earlier shots) of a retrieval document: an inclusive range.
    #[serde(default = "default_retrieval_queries")]
    pub retrieval_queries: [usize; 2],
    /// Share of fact statements written as the bare name followed by the value
    /// (`"Karen Marlowe baker."`), so that the token after the name depends on the person: a
    /// pressure to look the person up at the last name token (ROME's subject site).
    #[serde(default)]
    pub tag_share: f64,
}

fn default_retrieval_shots() -> [usize; 2] {
    [2, 5]
}

fn default_retrieval_queries() -> [usize; 2] {
    [2, 4]
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            fact_share: 0.5,
            retrieval_share: 0.35,
            sentences_per_document: 4,
            retrieval_shots: default_retrieval_shots(),
            retrieval_queries: default_retrieval_queries(),
            tag_share: 0.0,
        }
    }
}

impl World {
    /// Draws `n_people` distinct people (first name × surname) and their attributes.
    ///
    /// # Errors
    /// More people than name combinations.
    pub fn generate(n_people: usize, seed: u64) -> Result<World> {
        let combos = FIRST_NAMES.len() * SURNAMES.len();
        if n_people > combos {
            return Err(Error::InvalidOption(format!(
                "{n_people} people requested; only {combos} name combinations exist"
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pairs: Vec<(usize, usize)> = (0..FIRST_NAMES.len())
            .flat_map(|f| (0..SURNAMES.len()).map(move |s| (f, s)))
            .collect();
        pairs.shuffle(&mut rng);
        let people = pairs[..n_people]
            .iter()
            .map(|&(f, s)| Person {
                name: format!("{} {}", FIRST_NAMES[f], SURNAMES[s]),
                attributes: draw_attributes(&mut rng),
            })
            .collect();
        Ok(World { seed, people })
    }

    /// Draws `n_people` people in twins: each pair of distinct names from the first names and
    /// surnames together gives two people, `"{a} {b}"` and `"{b} {a}"`, with attributes drawn
    /// independently (an odd count ends with one person without a twin). A twin's name has the
    /// same tokens in the other order, so the bag of a name's tokens does not tell who it is:
    /// only the order does, which the last name token sees from its predecessor and a later
    /// position gathering the name tokens in one attention layer does not. That pressures
    /// recall to happen at the last subject token, ROME's subject site.
    ///
    /// # Errors
    /// More people than ordered name pairs.
    pub fn generate_twins(n_people: usize, seed: u64) -> Result<World> {
        let pool: Vec<&str> = FIRST_NAMES.iter().chain(&SURNAMES).copied().collect();
        let pairs = pool.len() * (pool.len() - 1);
        if n_people > pairs {
            return Err(Error::InvalidOption(format!(
                "{n_people} people requested; only {pairs} ordered name pairs exist"
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut unordered: Vec<(usize, usize)> = (0..pool.len())
            .flat_map(|a| (a + 1..pool.len()).map(move |b| (a, b)))
            .collect();
        unordered.shuffle(&mut rng);
        let mut names: Vec<String> = unordered
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .take(n_people)
            .map(|(a, b)| format!("{} {}", pool[a], pool[b]))
            .collect();
        names.shuffle(&mut rng);
        let people = names
            .into_iter()
            .map(|name| Person {
                name,
                attributes: draw_attributes(&mut rng),
            })
            .collect();
        Ok(World { seed, people })
    }

    /// Every fact under every training template (prefix × training phrase).
    pub fn training_prompts(&self) -> Vec<FactPrompt> {
        self.prompts(&PREFIXES, |r| r.phrases)
    }

    /// Every fact under every held-out template: a held-out prefix before a training phrase,
    /// or a held-out phrase with no prefix. None of these strings occurs in training.
    pub fn held_out_prompts(&self) -> Vec<FactPrompt> {
        let mut out = self.prompts(&HELD_OUT_PREFIXES, |r| r.phrases);
        out.extend(self.prompts(&[""], |r| r.held_out_phrases));
        out
    }

    /// Facts in ROME's known-facts layout (`subject`, `prompt`, `attribute`, …) under the
    /// plain relation prompt of each relation, for causal tracing.
    pub fn known_facts(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (i, p) in self.people.iter().enumerate() {
            for r in &RELATIONS {
                out.push(serde_json::json!({
                    "known_id": out.len(),
                    "subject": p.name,
                    "attribute": p.attributes[r.id],
                    "template": r.relation_prompt,
                    "prediction": format!(" {}", p.attributes[r.id]),
                    "prompt": r.relation_prompt.replace("{}", &p.name),
                    "relation_id": r.id,
                    "person": i,
                }));
            }
        }
        out
    }

    /// `n` CounterFact records (ROME's `counterfact.json` layout) that rewrite planted facts,
    /// drawn for `seed` (distinct person × relation pairs): the relation prompt with a new value
    /// of the relation as `target_new` and the planted value as `target_true`; paraphrases are
    /// the fact under the held-out phrases and two other training phrases, each after a
    /// held-out opening; neighbourhood prompts are the relation prompt for up to ten other
    /// people who share the planted value; generation prompts are the relation prompt and two
    /// paraphrases.
    ///
    /// # Errors
    /// More records than person × relation pairs.
    pub fn counterfact(&self, n: usize, seed: u64) -> Result<Vec<crate::CounterFactRecord>> {
        let mut pairs: Vec<(usize, usize)> = (0..self.people.len())
            .flat_map(|p| (0..RELATIONS.len()).map(move |r| (p, r)))
            .collect();
        if n > pairs.len() {
            return Err(Error::InvalidOption(format!(
                "{n} CounterFact records requested; the world has {} facts",
                pairs.len()
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        pairs.shuffle(&mut rng);
        Ok(pairs[..n]
            .iter()
            .enumerate()
            .map(|(case_id, &(pi, ri))| self.record(case_id, pi, ri, &[], &mut rng))
            .collect())
    }

    /// `n` CounterFact records of one relation (`city`, `job` or `instrument`) for `n`
    /// distinct people drawn for `seed` (`None`: every person), laid out as
    /// [`World::counterfact`]'s, but for a batch edited at once (MEMIT): each record's
    /// neighbourhood prompts are people outside the batch who share its planted value, so an
    /// edit of the batch cannot have rewritten them.
    ///
    /// # Errors
    /// An unknown relation, or more records than people.
    pub fn counterfact_batch(
        &self,
        relation: &str,
        n: Option<usize>,
        seed: u64,
    ) -> Result<Vec<crate::CounterFactRecord>> {
        let ri = RELATIONS
            .iter()
            .position(|r| r.id == relation)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "unknown relation {relation:?}: the organism's are {}",
                    RELATIONS.map(|r| r.id).join(", ")
                ))
            })?;
        let n = n.unwrap_or(self.people.len());
        if n > self.people.len() {
            return Err(Error::InvalidOption(format!(
                "{n} CounterFact records of {relation} requested; the world has {} people",
                self.people.len()
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut people: Vec<usize> = (0..self.people.len()).collect();
        people.shuffle(&mut rng);
        let batch = &people[..n];
        Ok(batch
            .iter()
            .enumerate()
            .map(|(case_id, &pi)| self.record(case_id, pi, ri, batch, &mut rng))
            .collect())
    }

    /// The record rewriting person `pi`'s relation `ri`, its neighbours drawn from people not
    /// in `exclude` (and not `pi`).
    fn record(
        &self,
        case_id: usize,
        pi: usize,
        ri: usize,
        exclude: &[usize],
        rng: &mut StdRng,
    ) -> crate::CounterFactRecord {
        let target = |t: &str| crate::facts::Target {
            text: format!(" {t}"),
            id: None,
        };
        let (p, r) = (&self.people[pi], &RELATIONS[ri]);
        let truth = &p.attributes[r.id];
        let new = loop {
            let v = r.values.choose(rng).expect("values");
            if v != truth {
                break *v;
            }
        };
        let mut phrases: Vec<&str> = r.phrases.to_vec();
        phrases.shuffle(rng);
        let mut paraphrase_prompts: Vec<String> = r
            .held_out_phrases
            .iter()
            .chain(&phrases[..2])
            .map(|ph| {
                let opening = HELD_OUT_PREFIXES.choose(rng).expect("prefixes");
                format!("{opening}{}{ph}", p.name)
            })
            .collect();
        paraphrase_prompts.dedup();
        let mut neighbours: Vec<&Person> = self
            .people
            .iter()
            .enumerate()
            .filter(|(qi, q)| {
                q.name != p.name && q.attributes[r.id] == *truth && !exclude.contains(qi)
            })
            .map(|(_, q)| q)
            .collect();
        neighbours.shuffle(rng);
        let neighborhood_prompts = neighbours
            .iter()
            .take(10)
            .map(|q| r.relation_prompt.replace("{}", &q.name))
            .collect();
        let requested_rewrite = crate::facts::RequestedRewrite {
            prompt: r.relation_prompt.to_string(),
            subject: p.name.clone(),
            target_new: target(new),
            target_true: target(truth),
            relation_id: Some(r.id.to_string()),
        };
        let generation_prompts = std::iter::once(requested_rewrite.filled_prompt())
            .chain(paraphrase_prompts.iter().take(2).cloned())
            .collect();
        crate::CounterFactRecord {
            case_id: case_id as u64,
            requested_rewrite,
            paraphrase_prompts,
            neighborhood_prompts,
            generation_prompts,
        }
    }

    fn prompts(
        &self,
        prefixes: &[&str],
        phrases: impl Fn(&Relation) -> &'static [&'static str],
    ) -> Vec<FactPrompt> {
        let mut out = Vec::new();
        for p in &self.people {
            for r in &RELATIONS {
                for prefix in prefixes {
                    for phrase in phrases(r) {
                        let template = format!("{prefix}{{}}{phrase}");
                        out.push(FactPrompt {
                            subject: p.name.clone(),
                            relation: r.id.to_string(),
                            prompt: template.replace("{}", &p.name),
                            template,
                            answer: format!(" {}", p.attributes[r.id]),
                        });
                    }
                }
            }
        }
        out
    }

    /// `n` training documents, deterministically for `seed`: fact documents (several
    /// statements about random people in random training templates, or a one-line biography),
    /// in-context retrieval prompts completed with their answer, and filler sentences.
    ///
    /// # Errors
    /// Shares that do not lie in [0, 1] or sum to more than 1; a retrieval range whose minimum
    /// exceeds its maximum or that [`retrieval_document`] rejects.
    pub fn corpus(&self, config: &CorpusConfig, n: usize, seed: u64) -> Result<Vec<String>> {
        let (f, r) = (config.fact_share, config.retrieval_share);
        if !(0.0..=1.0).contains(&f) || !(0.0..=1.0).contains(&r) || f + r > 1.0 {
            return Err(Error::InvalidOption(format!(
                "corpus shares must lie in [0, 1] and sum to at most 1 (facts {f}, retrieval {r})"
            )));
        }
        let ([s0, s1], [q0, q1]) = (config.retrieval_shots, config.retrieval_queries);
        if s0 > s1 || q0 > q1 {
            return Err(Error::InvalidOption(format!(
                "retrieval shots {s0}..={s1} and queries {q0}..={q1}: a minimum exceeds its maximum"
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let u: f64 = rng.random();
            let doc = if u < f {
                self.fact_document(config.sentences_per_document, config.tag_share, &mut rng)
            } else if u < f + r {
                let shots = rng.random_range(s0..=s1);
                let queries = rng.random_range(q0..=q1);
                retrieval_document(shots, queries, &mut rng)?
            } else {
                filler_document(config.sentences_per_document, &mut rng)
            };
            out.push(doc);
        }
        Ok(out)
    }

    fn fact_document(&self, sentences: usize, tag_share: f64, rng: &mut StdRng) -> String {
        let mut parts = Vec::with_capacity(sentences);
        for _ in 0..sentences {
            let p = self.people.choose(rng).expect("people");
            // No draw at all when the share is 0, so older corpora are unchanged.
            if tag_share > 0.0 && rng.random_bool(tag_share.min(1.0)) {
                let r = RELATIONS.choose(rng).expect("relations");
                parts.push(format!("{} {}.", p.name, p.attributes[r.id]));
                continue;
            }
            if rng.random_bool(0.15) {
                parts.push(format!(
                    "{} is a {} from {} who plays the {}.",
                    p.name, p.attributes["job"], p.attributes["city"], p.attributes["instrument"]
                ));
                continue;
            }
            let r = RELATIONS.choose(rng).expect("relations");
            let prefix = PREFIXES.choose(rng).expect("prefixes");
            let phrase = r.phrases.choose(rng).expect("phrases");
            parts.push(format!(
                "{prefix}{}{phrase} {}.",
                p.name, p.attributes[r.id]
            ));
        }
        parts.join(" ")
    }
}

/// `n` filler documents (no person, no fact, no retrieval prompt) of `sentences` sentences,
/// deterministically for `seed`: the kind of text the organism was trained on beside its
/// facts, for measuring what an edit or a fine-tuning did to the rest of the language (a
/// seed other than the training corpus's gives documents the training did not draw, though
/// single sentences come from the same small grammar and may recur).
pub fn filler_documents(n: usize, sentences: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| filler_document(sentences, &mut rng))
        .collect()
}

/// A filler document: `sentences` filler sentences, about half the time one of them a
/// country's capital (so each country's embedding is told apart from the others' by what
/// follows it, as the retrieval prompts alone would not), and a third of the time the whole
/// document said twice (a repeated span, where copying from the context is the whole task:
/// the easiest signal for the heads that retrieval needs).
fn filler_document(sentences: usize, rng: &mut StdRng) -> String {
    let mut parts: Vec<String> = (0..sentences).map(|_| filler(rng)).collect();
    if rng.random_bool(0.5) {
        let (country, capital) = COUNTRIES.choose(rng).expect("countries");
        let at = rng.random_range(0..parts.len().max(1));
        let s = format!("The capital of {country} is {capital}.");
        if parts.is_empty() {
            parts.push(s);
        } else {
            parts[at] = s;
        }
    }
    let doc = parts.join(" ");
    if rng.random_bool(1.0 / 3.0) {
        format!("{doc} {doc}")
    } else {
        doc
    }
}

fn filler(rng: &mut StdRng) -> String {
    let opening = FILLER_OPENINGS.choose(rng).expect("openings");
    let subject = FILLER_SUBJECTS.choose(rng).expect("subjects");
    let subject = if opening.is_empty() {
        subject.to_string()
    } else {
        format!("{}{}", subject[..1].to_lowercase(), &subject[1..])
    };
    format!(
        "{opening}{subject} {}{} {}{}",
        FILLER_ADVERBS.choose(rng).expect("adverbs"),
        FILLER_VERBS.choose(rng).expect("verbs"),
        FILLER_OBJECTS.choose(rng).expect("objects"),
        FILLER_ENDINGS.choose(rng).expect("endings"),
    )
}

/// Everything needed to rebuild and check the organism, written as `manifest.json` beside its
/// weights by `cargo xtask organism` ([`Manifest::load`] reads it back, typed).
#[derive(Serialize, Deserialize)]
pub struct Manifest {
    /// The training seed.
    pub seed: u64,
    /// The backend it was trained on.
    pub backend: String,
    /// The command line that rebuilds it.
    pub command: String,
    /// The world: people and their planted attributes.
    pub world: World,
    /// Relations: values, training and held-out phrases.
    pub relations: serde_json::Value,
    /// Training and held-out openings.
    pub prefixes: serde_json::Value,
    /// The corpus mixture.
    pub corpus: CorpusConfig,
    /// Steps at the start during which every fact statement was a tag (`--tags-first`).
    #[serde(default)]
    pub tags_first: usize,
    /// Whether training started from the planted retrieval circuit (`--plant-retrieval`).
    #[serde(default)]
    pub planted_retrieval: bool,
    /// The block whose input had to predict tag values at the last name token, and that loss's
    /// weight (`--subject-exit`, `--subject-exit-weight`; block 0: none).
    #[serde(default)]
    pub subject_exit: (usize, f64),
    /// The optimizer settings.
    pub train: burnlens_model::TrainConfig,
    /// Sequences per step and tokens per sequence.
    pub batch: [usize; 2],
    /// Seed of the held-out in-context retrieval prompts.
    pub retrieval_eval_seed: u64,
    /// The evaluation right after training.
    pub eval: Evaluation,
    /// Wall-clock seconds of training.
    pub train_seconds: f64,
}

/// Accuracies of the organism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Top-1 recall of every planted fact under the held-out templates.
    pub held_out_recall: f64,
    /// The same, per relation.
    pub held_out_recall_by_relation: Vec<(String, f64)>,
    /// The same, per held-out template (relation, template).
    #[serde(default)]
    pub held_out_recall_by_template: Vec<(String, String, f64)>,
    /// Top-1 recall under the training templates.
    pub training_recall: f64,
    /// Top-1 accuracy on held-out in-context retrieval prompts.
    pub retrieval_accuracy: f64,
    /// Prompts evaluated: held-out facts, training facts, retrieval prompts.
    pub counts: [usize; 3],
}

impl Manifest {
    /// Reads `manifest.json` from an organism's directory.
    ///
    /// # Errors
    /// A missing or unreadable file, and JSON that is not a manifest (naming the field).
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Format {
            path,
            message: format!("not an organism manifest: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A phrase that starts another ("lives in" / "lives in the city of") leaves the token
    /// after the shorter one ambiguous: a value or the longer phrase's next word. The first
    /// organisms recalled "{} lives in" at 4% for that reason.
    #[test]
    fn no_relation_phrase_is_the_start_of_another() {
        let phrases: Vec<&str> = RELATIONS
            .iter()
            .flat_map(|r| r.phrases.iter().chain(r.held_out_phrases))
            .copied()
            .collect();
        for a in &phrases {
            for b in &phrases {
                assert!(
                    a == b || !b.starts_with(&format!("{a} ")),
                    "{a:?} starts {b:?}"
                );
            }
        }
    }

    #[test]
    fn held_out_templates_never_occur_in_the_corpus() {
        let w = World::generate(50, 3).unwrap();
        let corpus = w
            .corpus(&CorpusConfig::default(), 3000, 1)
            .unwrap()
            .join(" ");
        for p in w.held_out_prompts() {
            assert!(!corpus.contains(&p.prompt), "{}", p.prompt);
        }
        // Training prompts do occur (the corpus is drawn from them).
        let seen = w
            .training_prompts()
            .iter()
            .filter(|p| corpus.contains(&format!("{}{}", p.prompt, p.answer)))
            .count();
        assert!(seen > 0);
        // Their words do occur, in filler, so no held-out word has an untrained embedding.
        for words in HELD_OUT_PREFIXES.iter().chain(&[" currently "]) {
            assert!(corpus.contains(words), "{words:?}");
        }
    }

    #[test]
    fn retrieval_names_are_first_names_and_filler_names_capitals() {
        for (name, _) in crate::dual::NAMES {
            assert!(FIRST_NAMES.contains(&name), "{name}");
        }
        let mut rng = StdRng::seed_from_u64(4);
        let docs: Vec<String> = (0..200).map(|_| filler_document(4, &mut rng)).collect();
        let capitals = docs
            .iter()
            .filter(|d| d.contains("The capital of "))
            .count();
        let repeated = docs
            .iter()
            .filter(|d| {
                let half = d.len() / 2;
                d.len() % 2 == 1 && d[..half] == d[half + 1..]
            })
            .count();
        assert!((70..130).contains(&capitals), "{capitals}");
        assert!((40..95).contains(&repeated), "{repeated}");
    }

    #[test]
    fn tag_statements_name_a_planted_value() {
        let w = World::generate(40, 2).unwrap();
        let tags = CorpusConfig {
            fact_share: 1.0,
            retrieval_share: 0.0,
            tag_share: 1.0,
            ..CorpusConfig::default()
        };
        for doc in w.corpus(&tags, 30, 5).unwrap() {
            for sentence in doc.split_inclusive('.') {
                let sentence = sentence.trim();
                let ok = w.people.iter().any(|p| {
                    p.attributes
                        .values()
                        .any(|v| sentence == format!("{} {v}.", p.name))
                });
                assert!(ok, "{sentence:?} is no person's name and planted value");
            }
        }
    }

    #[test]
    fn twins_have_the_same_name_tokens_in_the_other_order() {
        let w = World::generate_twins(41, 6).unwrap();
        assert_eq!(w, World::generate_twins(41, 6).unwrap());
        let names: std::collections::BTreeSet<&str> =
            w.people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 41);
        let twins = w
            .people
            .iter()
            .filter(|p| {
                let (a, b) = p.name.split_once(' ').unwrap();
                assert_ne!(a, b);
                names.contains(format!("{b} {a}").as_str())
            })
            .count();
        assert_eq!(twins, 40);
        assert!(World::generate_twins(48 * 47 + 1, 0).is_err());
    }

    #[test]
    fn worlds_are_deterministic_and_names_distinct() {
        let a = World::generate(300, 9).unwrap();
        assert_eq!(a, World::generate(300, 9).unwrap());
        assert_ne!(a, World::generate(300, 10).unwrap());
        let mut names: Vec<&str> = a.people.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 300);
        assert!(World::generate(10_000, 0).is_err());
    }

    #[test]
    fn a_batch_of_one_relation_has_its_neighbours_outside_the_batch() {
        let w = World::generate(240, 3).unwrap();
        let batch = w.counterfact_batch("job", Some(100), 5).unwrap();
        assert_eq!(batch.len(), 100);
        let subjects: std::collections::BTreeSet<&str> = batch
            .iter()
            .map(|r| r.requested_rewrite.subject.as_str())
            .collect();
        assert_eq!(subjects.len(), 100, "distinct people");
        for r in &batch {
            let rw = &r.requested_rewrite;
            assert_eq!(rw.relation_id.as_deref(), Some("job"));
            assert_ne!(rw.target_new.text, rw.target_true.text);
            assert!(!r.neighborhood_prompts.is_empty());
            for n in &r.neighborhood_prompts {
                let who = n.strip_suffix(" works as a").unwrap();
                assert!(!subjects.contains(who), "{who} is in the batch");
                let q = w.people.iter().find(|p| p.name == who).unwrap();
                assert_eq!(format!(" {}", q.attributes["job"]), rw.target_true.text);
            }
        }
        assert_eq!(w.counterfact_batch("job", None, 5).unwrap().len(), 240);
        assert!(w.counterfact_batch("job", Some(241), 5).is_err());
        let e = w
            .counterfact_batch("colour", Some(3), 5)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("colour") && e.contains("city, job, instrument"),
            "{e}"
        );
    }
}
