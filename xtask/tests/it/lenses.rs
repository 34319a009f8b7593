//! `tuned-lens` trains a lens on the organism's corpus that `lens --tuned` reads through; a
//! lens for another model is refused, naming the file.

use crate::{read_json, root, s, xtask};

#[test]
fn a_trained_tuned_lens_is_read_through_by_lens_and_refused_for_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tuned");
    xtask(&[
        "tuned-lens",
        "--steps",
        "120",
        "--samples",
        "300",
        "--out",
        s(&out),
    ])
    .succeeds();
    let r = read_json(&out.join("result.json"));
    let (logit, tuned) = (&r["kl_logit_lens"], &r["kl_tuned_lens"]);
    let n = r["readouts"].as_array().unwrap().len();
    assert_eq!(n, 5, "4 layers and the output");
    for l in 0..n - 1 {
        assert!(
            tuned[l].as_f64().unwrap() < logit[l].as_f64().unwrap(),
            "readout {l}: {tuned} vs {logit}"
        );
    }
    assert!(out.join("kl.svg").exists() && out.join("index.html").exists());
    let file = out.join("tuned_lens.safetensors");
    let lens = tmp.path().join("lens");
    xtask(&[
        "lens",
        "--prompt",
        "Jessop Emma lives in",
        "--answer",
        " Paris",
        "--tuned",
        s(&file),
        "--out",
        s(&lens),
    ])
    .succeeds();
    let r = read_json(&lens.join("result.json"));
    assert_eq!(r["tuned_lens"].as_str().unwrap(), s(&file));
    // The last readout is the output, lens or not: the planted answer.
    let last = r["positions"].as_array().unwrap().last().unwrap();
    assert_eq!(last["answer_rank"].as_array().unwrap().last().unwrap(), 0);
    let tiny = root().join("fixtures/tiny-gpt2");
    xtask(&[
        "lens",
        "--model",
        s(&tiny),
        "--prompt",
        "The city of",
        "--tuned",
        s(&file),
        "--out",
        s(&tmp.path().join("x")),
    ])
    .fails_naming(&["tuned_lens.safetensors", "another model"]);
}
