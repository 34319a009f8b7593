//! Loaders round-trip the hand-written fixtures; malformed input names file, record and field;
//! the dual-setting generator is deterministic and yields single-token answers.

use std::path::{Path, PathBuf};

use burnlens_datasets::*;
use burnlens_model::{Gpt2Tokenizer, PaddingSide};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn gpt2() -> Gpt2Tokenizer {
    Gpt2Tokenizer::from_dir(&fixtures().join("gpt2-bpe")).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn prompt_pairs_load_alike_from_json_jsonl_and_csv_and_round_trip() {
    let d = fixtures().join("datasets");
    let json = load_pairs(&d.join("pairs.json")).unwrap();
    assert_eq!(json.len(), 5);
    assert_eq!(json[1].answer, " Mary");
    assert_eq!(load_pairs(&d.join("pairs.jsonl")).unwrap(), json);
    assert_eq!(load_pairs(&d.join("pairs.csv")).unwrap(), json);
    // Write back and read again.
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "back.json",
        &serde_json::to_string(&json).unwrap(),
    );
    assert_eq!(load_pairs(&p).unwrap(), json);
}

#[test]
fn tokenized_pairs_are_padded_and_report_what_was_dropped() {
    let pairs = load_pairs(&fixtures().join("datasets/pairs.json")).unwrap();
    let tok = gpt2();
    let t = tokenize_pairs(
        &pairs,
        &tok,
        PairOptions {
            prepend_bos: false,
            padding: PaddingSide::Right,
        },
    )
    .unwrap();
    assert_eq!(t.indices, vec![0, 1]);
    assert_eq!(t.dropped.len(), 3);
    let reason = |i: usize| {
        t.dropped
            .iter()
            .find(|d| d.index == i)
            .unwrap()
            .reason
            .clone()
    };
    let (a, b) = (
        tok.encode(&pairs[2].clean, false).unwrap().len(),
        tok.encode(&pairs[2].corrupted, false).unwrap().len(),
    );
    assert_eq!(
        reason(2),
        DropReason::LengthMismatch {
            clean: a,
            corrupted: b
        }
    );
    assert_eq!(reason(3), DropReason::Identical);
    assert!(matches!(
        reason(4),
        DropReason::NotSingleToken {
            field: "answer",
            tokens: 2,
            ..
        }
    ));
    assert!(
        reason(4)
            .to_string()
            .contains("\" Buenos Aires\" is 2 tokens")
    );
    // Padded to the longest kept prompt; the answer is read at each row's last real token.
    assert_eq!(
        t.clean.seq_len(),
        tok.encode(&pairs[1].clean, false).unwrap().len()
    );
    assert_eq!(t.last_positions, vec![4, t.clean.seq_len() - 1]);
    assert_eq!(
        t.answer_ids,
        vec![
            tok.single_token(" Paris").unwrap(),
            tok.single_token(" Mary").unwrap()
        ]
    );
    assert_eq!(t.foil_ids[0], tok.single_token(" Rome").unwrap());
    // France/Italy differ at position 3; the IOI pair at the second name.
    assert_eq!(t.diff_positions[0], vec![3]);
    assert_eq!(t.diff_positions[1].len(), 1);
    // Left padding with BOS: rows end together.
    let t = tokenize_pairs(
        &pairs,
        &tok,
        PairOptions {
            prepend_bos: true,
            padding: PaddingSide::Left,
        },
    )
    .unwrap();
    assert_eq!(t.last_positions, vec![t.clean.seq_len() - 1; 2]);
    assert_eq!(t.clean.row(1)[0], tok.endoftext_id().unwrap());
    // Everything dropped is an error that says why.
    let err = tokenize_pairs(&pairs[3..], &tok, PairOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("every prompt pair was dropped")
            && err.contains("pair 0")
            && err.contains("not one"),
        "{err}"
    );
}

#[test]
fn fact_records_load_and_round_trip() {
    let d = fixtures().join("datasets");
    let cf = load_counterfact(&d.join("counterfact.json")).unwrap();
    assert_eq!(cf.len(), 2);
    assert_eq!(
        cf[0].requested_rewrite.filled_prompt(),
        "The mother tongue of Marie Curie is"
    );
    assert_eq!(cf[0].requested_rewrite.target_true.text, "Polish");
    assert_eq!(cf[1].requested_rewrite.target_new.id, None);
    let tr = load_tracing(&d.join("tracing.json")).unwrap();
    assert_eq!(tr[1].relation_suffix, " is located in");
    let kf = load_known_facts(&d.join("known_facts.json")).unwrap();
    assert_eq!(
        kf.iter().map(|k| k.known_id).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let tmp = tempfile::tempdir().unwrap();
    let back = write(
        tmp.path(),
        "cf.jsonl",
        &cf.iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_eq!(load_counterfact(&back).unwrap(), cf);
    let back = write(tmp.path(), "kf.json", &serde_json::to_string(&kf).unwrap());
    assert_eq!(load_known_facts(&back).unwrap(), kf);
    let back = write(tmp.path(), "tr.json", &serde_json::to_string(&tr).unwrap());
    assert_eq!(load_tracing(&back).unwrap(), tr);
}

#[test]
fn facts_read_known_facts_and_tracing_rows_into_one_shape() {
    let d = fixtures().join("datasets");
    let known = load_facts(&d.join("known_facts.json")).unwrap();
    assert_eq!(known[0].prompt, "The Louvre is located in the city of");
    assert_eq!(known[0].subject, "The Louvre");
    // Known facts store "Paris"; the next token is " Paris".
    assert_eq!(known[0].target.as_deref(), Some(" Paris"));
    assert_eq!(known[0].foil, None);
    let rows = load_facts(&d.join("tracing.json")).unwrap();
    assert_eq!(rows[0].target.as_deref(), Some(" Polish"));
    assert_eq!(rows[0].foil.as_deref(), Some(" English"));
    let e = load_facts(&d.join("pairs.json")).unwrap_err().to_string();
    assert!(
        e.contains("pairs.json") && e.contains("`subject`") && e.contains("`relation`"),
        "{e}"
    );
}

#[test]
fn malformed_input_names_file_record_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let check = |err: Error, parts: &[&str]| {
        let msg = err.to_string();
        for p in parts {
            assert!(msg.contains(p), "{msg:?} should mention {p:?}");
        }
    };
    let p = write(
        dir,
        "missing.json",
        r#"[{"clean": "a", "corrupted": "b", "answer": " c", "foil": " d"}, {"clean": "a", "corrupted": "b", "answer": " c"}]"#,
    );
    check(
        load_pairs(&p).unwrap_err(),
        &["missing.json", "record 1", "foil"],
    );
    let p = write(
        dir,
        "empty.jsonl",
        "{\"clean\": \"\", \"corrupted\": \"b\", \"answer\": \" c\", \"foil\": \" d\"}\n",
    );
    check(
        load_pairs(&p).unwrap_err(),
        &["empty.jsonl", "record 0", "clean"],
    );
    let p = write(dir, "short.csv", "clean,corrupted,answer,foil\na,b, c\n");
    check(
        load_pairs(&p).unwrap_err(),
        &["short.csv", "record 0", "3 fields"],
    );
    let p = write(dir, "bad.jsonl", "{\"clean\": \"a\"}\nnot json\n");
    check(load_pairs(&p).unwrap_err(), &["bad.jsonl", "line 2"]);
    check(
        load_pairs(&dir.join("nope.json")).unwrap_err(),
        &["nope.json"],
    );
    check(
        load_pairs(&write(dir, "x.txt", "")).unwrap_err(),
        &["x.txt", ".json, .jsonl or .csv"],
    );
    let p = write(
        dir,
        "known.json",
        r#"[{"known_id": 7, "subject": "Toyota", "attribute": "Japan", "template": "{} is from", "prediction": " Japan", "prompt": "Honda is from", "relation_id": "P17"}]"#,
    );
    check(
        load_known_facts(&p).unwrap_err(),
        &["known.json", "record 0", "\"Toyota\" does not occur"],
    );
    let p = write(
        dir,
        "cf.json",
        r#"[{"case_id": 3, "requested_rewrite": {"prompt": "The capital is", "subject": "X", "target_new": {"str": "A"}, "target_true": {"str": "B"}}}]"#,
    );
    check(
        load_counterfact(&p).unwrap_err(),
        &["cf.json", "record 0", "no {} slot"],
    );
    let p = write(
        dir,
        "cf2.json",
        r#"[{"case_id": 3, "requested_rewrite": {"prompt": "{} is", "subject": "X", "target_new": {"text": "A"}, "target_true": {"str": "B"}}}]"#,
    );
    check(
        load_counterfact(&p).unwrap_err(),
        &["cf2.json", "record 0", "`str`"],
    );
    let p = write(
        dir,
        "tr.json",
        r#"[{"relation": "{} is", "prompt": "X is"}]"#,
    );
    check(
        load_tracing(&p).unwrap_err(),
        &["tr.json", "record 0", "relation_prefix"],
    );
    let p = write(dir, "t.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no\"}\n");
    check(
        read_texts(&p).unwrap_err(),
        &["t.jsonl", "record 1", "`text`"],
    );
}

#[test]
fn dual_setting_prompts_are_deterministic_and_single_token() {
    let tok = gpt2();
    for form in [DualForm::Explicit, DualForm::Implicit] {
        let cfg = DualConfig {
            form,
            n_shots: 3,
            n_prompts: 25,
            seed: 11,
        };
        let a = generate_dual(&cfg, Some(&tok)).unwrap();
        assert_eq!(
            a,
            generate_dual(&cfg, Some(&tok)).unwrap(),
            "same seed, same prompts"
        );
        assert_ne!(
            a,
            generate_dual(&DualConfig { seed: 12, ..cfg }, Some(&tok)).unwrap()
        );
        assert_eq!(a.len(), 25);
        for p in &a {
            assert_eq!(
                tok.encode(&p.answer, false).unwrap().len(),
                1,
                "{}",
                p.answer
            );
            assert_eq!(tok.encode(&p.foil, false).unwrap().len(), 1, "{}", p.foil);
            assert_ne!(p.answer, p.foil);
            assert_ne!(p.country, p.corrupted_country);
            // Three in-context facts, then the query; the corrupted prompt only swaps the country.
            assert_eq!(p.prompt.matches(" is from ").count(), 4);
            // Shots use other countries, so swapping the query country everywhere is exactly
            // the corruption.
            assert_eq!(
                p.corrupted,
                p.prompt.replace(&p.country, &p.corrupted_country)
            );
            let query = p.prompt.rsplit(". ").next().unwrap();
            match form {
                DualForm::Explicit => assert!(
                    query.ends_with(&format!("The capital of {} is", p.country)),
                    "{query}"
                ),
                DualForm::Implicit => assert!(
                    query.ends_with(" lives in") && query.contains(&p.country),
                    "{query}"
                ),
                DualForm::Retrieval => unreachable!("tested on its own"),
            }
        }
        // Pairs align token by token, so none is dropped.
        let pairs: Vec<PromptPair> = a.iter().map(DualPrompt::pair).collect();
        let t = tokenize_pairs(&pairs, &tok, PairOptions::default()).unwrap();
        assert!(t.dropped.is_empty(), "{:?}", t.dropped);
    }
    let err = generate_dual(
        &DualConfig {
            n_shots: 40,
            ..DualConfig::default()
        },
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("40 shots"));
}

#[test]
fn retrieval_prompts_copy_their_answer_from_the_context() {
    let tok = gpt2();
    let cfg = DualConfig {
        form: DualForm::Retrieval,
        n_shots: 4,
        n_prompts: 30,
        seed: 3,
    };
    let a = generate_dual(&cfg, Some(&tok)).unwrap();
    assert_eq!(a, generate_dual(&cfg, Some(&tok)).unwrap());
    assert_eq!(a.len(), 30);
    for p in &a {
        // Four statements and the query; the queried name's statement holds the answer, and
        // the corrupted prompt queries another name of the same context, whose country is the
        // foil.
        assert_eq!(p.prompt.matches(" is from").count(), 5, "{}", p.prompt);
        let (context, query) = p.prompt.rsplit_once(". ").unwrap();
        let name = query.strip_suffix(" is from").unwrap();
        assert!(
            context.contains(&format!("{name} is from {}.", p.country))
                || context.ends_with(&format!("{name} is from {}", p.country)),
            "{}",
            p.prompt
        );
        assert_eq!(p.answer, format!(" {}", p.country));
        let (c2, q2) = p.corrupted.rsplit_once(". ").unwrap();
        assert_eq!(c2, context);
        let other = q2.strip_suffix(" is from").unwrap();
        assert_ne!(other, name);
        assert!(context.contains(&format!("{other} is from {}", p.corrupted_country)));
        assert_eq!(p.foil, format!(" {}", p.corrupted_country));
        assert_ne!(p.answer, p.foil);
        assert_eq!(tok.encode(&p.answer, false).unwrap().len(), 1);
    }
    let pairs: Vec<PromptPair> = a.iter().map(DualPrompt::pair).collect();
    let t = tokenize_pairs(&pairs, &tok, PairOptions::default()).unwrap();
    assert!(t.dropped.is_empty(), "{:?}", t.dropped);
    let err = generate_dual(&DualConfig { n_shots: 1, ..cfg }, None).unwrap_err();
    assert!(err.to_string().contains("at least 2"), "{err}");
}

#[test]
fn retrieval_documents_restate_earlier_statements() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for (shots, queries) in [(2, 1), (3, 4), (5, 2)] {
        let doc = retrieval_document(shots, queries, &mut rng).unwrap();
        let sentences: Vec<&str> = doc.strip_suffix('.').unwrap().split(". ").collect();
        assert_eq!(sentences.len(), shots + queries, "{doc}");
        let (context, asked) = sentences.split_at(shots);
        // The shots pair distinct names with distinct countries.
        let names: Vec<&str> = context
            .iter()
            .map(|s| s.split(" is from ").next().unwrap())
            .collect();
        let countries: Vec<&str> = context
            .iter()
            .map(|s| s.split(" is from ").nth(1).unwrap())
            .collect();
        for v in [&names, &countries] {
            let mut u = v.clone();
            u.sort_unstable();
            u.dedup();
            assert_eq!(u.len(), shots, "{doc}");
        }
        // Every query repeats a shot, never the one just asked.
        for (i, q) in asked.iter().enumerate() {
            assert!(context.contains(q), "{q:?} not in the context of {doc}");
            if i > 0 {
                assert_ne!(q, &asked[i - 1], "{doc}");
            }
        }
    }
    // The same seed gives the same document.
    let a = retrieval_document(4, 3, &mut rand::rngs::StdRng::seed_from_u64(1)).unwrap();
    let b = retrieval_document(4, 3, &mut rand::rngs::StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(a, b);
    for (s, q) in [(1, 1), (17, 1), (3, 0)] {
        let err = retrieval_document(s, q, &mut rng).unwrap_err();
        assert!(err.to_string().contains("shots"), "{err}");
    }
}

#[test]
fn texts_are_chunked_to_the_context() {
    let d = fixtures().join("datasets");
    let tok = gpt2();
    let txt = read_texts(&d.join("text.txt")).unwrap();
    assert_eq!(txt.len(), 3);
    assert_eq!(read_texts(&d.join("text.jsonl")).unwrap(), txt);
    let rows = chunk_texts(&txt, &tok, 16, true).unwrap();
    let eos = tok.endoftext_id().unwrap();
    let total: usize = txt
        .iter()
        .map(|t| tok.encode(t, false).unwrap().len())
        .sum::<usize>()
        + txt.len()
        - 1;
    assert_eq!(rows.len(), total / 15);
    assert!(rows.iter().all(|r| r.len() == 16 && r[0] == eos));
    // The rows are the joined stream, in order.
    let first = tok.encode(&txt[0], false).unwrap();
    assert_eq!(&rows[0][1..], &first[..15]);
    let b = batches(&rows, 2).unwrap();
    assert_eq!(b.len(), rows.len().div_ceil(2));
    assert!(chunk_texts(&txt, &tok, 1, true).is_err());
    assert!(
        chunk_texts(&txt[..1], &tok, 1000, false)
            .unwrap_err()
            .to_string()
            .contains("fewer than one row")
    );
}
