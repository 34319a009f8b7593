//! The factual-recall "dual setting" prompt generator: few-shot prompts that mix an in-context
//! pattern with recall from memory, in an explicit and an implicit form, and a retrieval form
//! whose answer is copied from the context, with clean/corrupted pairs for patching.

use burnlens_model::Gpt2Tokenizer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::pairs::PromptPair;

/// Countries and their capitals, as they appear in prompts.
pub const COUNTRIES: [(&str, &str); 32] = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Greece", "Athens"),
    ("Poland", "Warsaw"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
    ("Portugal", "Lisbon"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Cuba", "Havana"),
    ("Thailand", "Bangkok"),
    ("the USA", "Washington"),
    ("the UK", "London"),
    ("Turkey", "Ankara"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Syria", "Damascus"),
    ("Lebanon", "Beirut"),
    ("Afghanistan", "Kabul"),
    ("Argentina", "Buenos Aires"),
    ("Australia", "Canberra"),
    ("Hungary", "Budapest"),
    ("Denmark", "Copenhagen"),
];

/// First names and the pronoun the implicit form uses for them.
pub const NAMES: [(&str, &str); 16] = [
    ("Alice", "she"),
    ("Bob", "he"),
    ("Carol", "she"),
    ("David", "he"),
    ("Emma", "she"),
    ("Frank", "he"),
    ("Grace", "she"),
    ("Henry", "he"),
    ("Irene", "she"),
    ("John", "he"),
    ("Karen", "she"),
    ("Louis", "he"),
    ("Maria", "she"),
    ("Nathan", "he"),
    ("Olivia", "she"),
    ("Peter", "he"),
];

/// The two forms of the dual setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DualForm {
    /// "Alice is from France. The capital of France is Paris. … John is from the USA. The
    /// capital of the USA is" → " Washington".
    Explicit,
    /// "Alice is from France, and she lives in Paris. … John is from the USA, and he lives in"
    /// → " Washington".
    Implicit,
    /// "Alice is from France. Bob is from Japan. Carol is from Peru. Bob is from" → " Japan":
    /// the query repeats a name of the context and the answer is copied from its statement.
    /// The corrupted prompt queries another name of the context, whose country is the foil.
    Retrieval,
}

/// Generator settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualConfig {
    /// Which form.
    pub form: DualForm,
    /// In-context examples before the query.
    pub n_shots: usize,
    /// Prompts to generate.
    pub n_prompts: usize,
    /// Seed: the same seed gives the same prompts.
    pub seed: u64,
}

impl Default for DualConfig {
    fn default() -> Self {
        Self {
            form: DualForm::Explicit,
            n_shots: 3,
            n_prompts: 20,
            seed: 0,
        }
    }
}

/// One generated prompt with its corrupted twin. In the retrieval form, "country" is the
/// queried statement's country and the answer is the country itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualPrompt {
    /// The clean prompt.
    pub prompt: String,
    /// The answer (" Washington").
    pub answer: String,
    /// The queried country.
    pub country: String,
    /// The prompt with the query country swapped.
    pub corrupted: String,
    /// The swapped-in country.
    pub corrupted_country: String,
    /// The corrupted prompt's answer.
    pub foil: String,
}

impl DualPrompt {
    /// As a clean/corrupted prompt pair.
    pub fn pair(&self) -> PromptPair {
        PromptPair {
            clean: self.prompt.clone(),
            corrupted: self.corrupted.clone(),
            answer: self.answer.clone(),
            foil: self.foil.clone(),
        }
    }
}

fn sentence(form: DualForm, name: (&str, &str), country: &str, capital: Option<&str>) -> String {
    let (name, pronoun) = name;
    match (form, capital) {
        (DualForm::Explicit, Some(c)) => {
            format!("{name} is from {country}. The capital of {country} is {c}.")
        }
        (DualForm::Explicit, None) => {
            format!("{name} is from {country}. The capital of {country} is")
        }
        (DualForm::Implicit, Some(c)) => {
            format!("{name} is from {country}, and {pronoun} lives in {c}.")
        }
        (DualForm::Implicit, None) => format!("{name} is from {country}, and {pronoun} lives in"),
        (DualForm::Retrieval, Some(_)) => format!("{name} is from {country}."),
        (DualForm::Retrieval, None) => format!("{name} is from"),
    }
}

/// A training document of the retrieval form: `n_shots` statements "{name} is from
/// {country}." with distinct names and countries, followed by `n_queries` restatements of
/// earlier ones (never the same one twice in a row), each of whose countries can only be
/// copied from the context. Its first shots and first query read exactly like a prompt of
/// [`generate_dual`]'s retrieval form completed with its answer; the further queries give a
/// document several answers to learn retrieval from instead of one.
///
/// # Errors
/// Fewer than 2 shots, more shots than names, or no query.
pub fn retrieval_document(n_shots: usize, n_queries: usize, rng: &mut StdRng) -> Result<String> {
    if n_shots < 2 || n_shots > NAMES.len() || n_queries == 0 {
        return Err(Error::InvalidOption(format!(
            "a retrieval document needs 2 to {} shots and at least one query ({n_shots} shots, \
             {n_queries} queries)",
            NAMES.len()
        )));
    }
    let mut names = NAMES.to_vec();
    names.shuffle(rng);
    let mut countries: Vec<&str> = COUNTRIES.iter().map(|&(c, _)| c).collect();
    countries.shuffle(rng);
    let shots: Vec<((&str, &str), &str)> = names.into_iter().zip(countries).take(n_shots).collect();
    let mut parts: Vec<String> = shots
        .iter()
        .map(|&(n, c)| sentence(DualForm::Retrieval, n, c, Some(c)))
        .collect();
    let mut last = usize::MAX;
    for _ in 0..n_queries {
        let mut q = rng.random_range(0..n_shots);
        if q == last {
            q = (q + rng.random_range(1..n_shots)) % n_shots;
        }
        last = q;
        let (n, c) = shots[q];
        parts.push(sentence(DualForm::Retrieval, n, c, Some(c)));
    }
    Ok(parts.join(" "))
}

/// Generates dual-setting prompts, deterministically for a seed.
///
/// With a tokenizer, only countries whose capital (with its leading space) is one token are
/// used, and the corrupted country is one whose name has as many tokens as the query's, so
/// that clean and corrupted prompts align position by position. In the retrieval form the
/// answer is a country, so countries must be one token instead, and the swapped names must
/// have as many tokens as each other.
///
/// # Errors
/// More shots than the table allows (the retrieval form needs at least 2, one of them the
/// foil), or a tokenizer under which too few countries qualify.
pub fn generate_dual(
    config: &DualConfig,
    tokenizer: Option<&Gpt2Tokenizer>,
) -> Result<Vec<DualPrompt>> {
    if config.form == DualForm::Retrieval {
        return generate_retrieval(config, tokenizer);
    }
    let mut pool: Vec<(&str, &str, usize)> = Vec::new();
    for &(country, capital) in &COUNTRIES {
        let country_tokens = match tokenizer {
            Some(t) => {
                if t.encode(&format!(" {capital}"), false)?.len() != 1 {
                    continue;
                }
                t.encode(&format!(" {country}"), false)?.len()
            }
            None => 0,
        };
        pool.push((country, capital, country_tokens));
    }
    // Shots and query are distinct countries; the corrupted country is one more.
    if config.n_shots + 2 > pool.len() || config.n_shots + 1 > NAMES.len() {
        return Err(Error::InvalidOption(format!(
            "{} shots need {} countries and {} names; {} countries qualify and {} names exist",
            config.n_shots,
            config.n_shots + 2,
            config.n_shots + 1,
            pool.len(),
            NAMES.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut out = Vec::with_capacity(config.n_prompts);
    let mut attempts = 0;
    while out.len() < config.n_prompts {
        attempts += 1;
        if attempts > 100 * config.n_prompts.max(1) {
            return Err(Error::InvalidOption(
                "no corrupted country with a matching token length could be found".into(),
            ));
        }
        let mut countries = pool.clone();
        countries.shuffle(&mut rng);
        let mut names = NAMES.to_vec();
        names.shuffle(&mut rng);
        let (shots, rest) = countries.split_at(config.n_shots);
        let query = rest[0];
        let Some(swap) = rest[1..].iter().find(|c| c.2 == query.2) else {
            continue;
        };
        let context: Vec<String> = shots
            .iter()
            .zip(&names)
            .map(|(c, &n)| sentence(config.form, n, c.0, Some(c.1)))
            .collect();
        let name = names[config.n_shots];
        let build = |country: &str| {
            let mut parts = context.clone();
            parts.push(sentence(config.form, name, country, None));
            parts.join(" ")
        };
        out.push(DualPrompt {
            prompt: build(query.0),
            answer: format!(" {}", query.1),
            country: query.0.to_string(),
            corrupted: build(swap.0),
            corrupted_country: swap.0.to_string(),
            foil: format!(" {}", swap.1),
        });
    }
    Ok(out)
}

fn generate_retrieval(
    config: &DualConfig,
    tokenizer: Option<&Gpt2Tokenizer>,
) -> Result<Vec<DualPrompt>> {
    let mut countries: Vec<&str> = Vec::new();
    for &(country, _) in &COUNTRIES {
        if let Some(t) = tokenizer
            && t.encode(&format!(" {country}"), false)?.len() != 1
        {
            continue;
        }
        countries.push(country);
    }
    let names: Vec<((&str, &str), usize)> = NAMES
        .iter()
        .map(|&n| {
            let len = match tokenizer {
                Some(t) => t.encode(&format!(" {}", n.0), false)?.len(),
                None => 0,
            };
            Ok((n, len))
        })
        .collect::<Result<_>>()?;
    if config.n_shots < 2 || config.n_shots > countries.len() || config.n_shots > names.len() {
        return Err(Error::InvalidOption(format!(
            "{} shots in the retrieval form need at least 2 and at most {} (countries that \
             qualify) and {} (names)",
            config.n_shots,
            countries.len(),
            names.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut out = Vec::with_capacity(config.n_prompts);
    let mut attempts = 0;
    while out.len() < config.n_prompts {
        attempts += 1;
        if attempts > 100 * config.n_prompts.max(1) {
            return Err(Error::InvalidOption(
                "no two names of the context with a matching token length could be found".into(),
            ));
        }
        let mut cs = countries.clone();
        cs.shuffle(&mut rng);
        let mut ns = names.clone();
        ns.shuffle(&mut rng);
        let shots: Vec<((&str, &str), usize, &str)> = ns
            .iter()
            .zip(&cs)
            .take(config.n_shots)
            .map(|(&(n, len), &c)| (n, len, c))
            .collect();
        let q = rng.random_range(0..shots.len());
        let Some(f) = (1..shots.len())
            .map(|d| (q + d) % shots.len())
            .find(|&i| shots[i].1 == shots[q].1)
        else {
            continue;
        };
        let context: Vec<String> = shots
            .iter()
            .map(|&(n, _, c)| sentence(DualForm::Retrieval, n, c, Some(c)))
            .collect();
        let build = |name: (&str, &str)| {
            let mut parts = context.clone();
            parts.push(sentence(DualForm::Retrieval, name, "", None));
            parts.join(" ")
        };
        out.push(DualPrompt {
            prompt: build(shots[q].0),
            answer: format!(" {}", shots[q].2),
            country: shots[q].2.to_string(),
            corrupted: build(shots[f].0),
            corrupted_country: shots[f].2.to_string(),
            foil: format!(" {}", shots[f].2),
        });
    }
    Ok(out)
}
