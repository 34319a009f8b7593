//! Checkpoint layouts and bad input: every loading path on local directories, every error
//! named, no panic.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use burnlens_model::weights::{
    RawTensor, read_safetensors, write_safetensors, write_safetensors_as,
};
use burnlens_model::{Error, GenerationConfig, Gpt2Config, TokenBatch, load};
use common::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn tiny_copy() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), d.path());
    d
}

fn err_of(dir: &Path) -> String {
    load(dir.to_str().unwrap(), &Device::flex())
        .unwrap_err()
        .to_string()
}

#[test]
fn gpt2_small_shaped_random_checkpoint_loads_with_124m_params() {
    let dev = Device::flex();
    dev.seed(0);
    let model = Gpt2Config::gpt2_small().init(&dev);
    let dir = tempfile::tempdir().unwrap();
    model.save_pretrained(dir.path()).unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(root().join("fixtures/gpt2-bpe").join(f), dir.path().join(f)).unwrap();
    }
    drop(model);
    let lm = load(dir.path().to_str().unwrap(), &dev).unwrap();
    assert_eq!(lm.model.num_params(), 124_439_808);
    assert_eq!(lm.model.config.num_params(), 124_439_808);
    let ids = lm.tokenizer.encode("Hello, world!", false).unwrap();
    let logits = lm.model.logits(&TokenBatch::single(&ids).unwrap()).unwrap();
    assert_eq!(logits.dims(), [1, 4, 50257]);
}

/// The published layouts of the GPT-2 family: parameter counts from the config, and a
/// narrow copy of each (same depth, head count and key names, small width) loads from a
/// hub-style file (no `transformer.` prefix, with the old `attn.bias` mask buffers).
#[test]
fn every_gpt2_family_layout_loads() {
    let family = [
        ("gpt2", 12, 12, 768, 124_439_808usize),
        ("gpt2-medium", 24, 16, 1024, 354_823_168),
        ("gpt2-large", 36, 20, 1280, 774_030_080),
        ("gpt2-xl", 48, 25, 1600, 1_557_611_200),
        ("distilgpt2", 6, 12, 768, 81_912_576),
    ];
    let dev = Device::flex();
    for (name, n_layer, n_head, n_embd, params) in family {
        let json = format!(
            r#"{{"model_type": "gpt2", "activation_function": "gelu_new", "n_layer": {n_layer}, "n_head": {n_head},
               "n_embd": {n_embd}, "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257,
               "layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256}}"#
        );
        let cfg = Gpt2Config::from_hf_json(&json).unwrap();
        assert_eq!(cfg.num_params(), params, "{name}");
        // Narrow copy: d_head 2, the tiny tokenizer's vocabulary, context 32.
        let narrow = Gpt2Config::new(n_layer, n_head, 2 * n_head, 641, 32);
        let model = narrow.init(&dev);
        let mut raw: BTreeMap<String, RawTensor> = model
            .to_raw()
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("transformer.").to_string(), v))
            .collect();
        for l in 0..n_layer {
            raw.insert(
                format!("h.{l}.attn.bias"),
                RawTensor {
                    shape: vec![1, 1, 32, 32],
                    data: vec![1.0; 1024],
                },
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), narrow.to_hf_json()).unwrap();
        write_safetensors(&raw, &dir.path().join("model.safetensors")).unwrap();
        std::fs::copy(
            tiny_dir().join("tokenizer.json"),
            dir.path().join("tokenizer.json"),
        )
        .unwrap();
        let lm = load(dir.path().to_str().unwrap(), &dev).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(lm.model.blocks.len(), n_layer);
        let a = to_vec(
            model
                .logits(&TokenBatch::single(&[1, 2, 3]).unwrap())
                .unwrap(),
        );
        let b = to_vec(
            lm.model
                .logits(&TokenBatch::single(&[1, 2, 3]).unwrap())
                .unwrap(),
        );
        assert!(
            max_abs_diff(&a, &b) == 0.0,
            "{name}: reloaded weights differ"
        );
    }
}

#[test]
fn half_precision_checkpoints_are_upcast() {
    // Rewrite the tiny fixture's weights as f16 and bf16; logits stay within the rounding error.
    let raw = read_safetensors(&tiny_dir().join("model.safetensors")).unwrap();
    let dev = Device::flex();
    let base = load(tiny_dir().to_str().unwrap(), &dev).unwrap();
    let ids = [5u32, 17, 33, 2];
    let want = to_vec(
        base.model
            .logits(&TokenBatch::single(&ids).unwrap())
            .unwrap(),
    );
    for dtype in [safetensors::Dtype::F16, safetensors::Dtype::BF16] {
        let dir = tiny_copy();
        write_safetensors_as(&raw, &dir.path().join("model.safetensors"), dtype).unwrap();
        let lm = load(dir.path().to_str().unwrap(), &dev).unwrap();
        let got = to_vec(lm.model.logits(&TokenBatch::single(&ids).unwrap()).unwrap());
        let d = max_abs_diff(&got, &want);
        assert!(d > 0.0 && d < 0.5, "{dtype:?}: {d}");
    }
}

#[test]
fn missing_files_are_named() {
    for (file, what) in [
        ("config.json", "config.json"),
        ("model.safetensors", "model.safetensors"),
        ("tokenizer.json", "tokenizer"),
    ] {
        let d = tiny_copy();
        std::fs::remove_file(d.path().join(file)).unwrap();
        let err = err_of(d.path());
        assert!(
            err.contains("missing file") && err.contains(what),
            "{file}: {err}"
        );
    }
    let err = err_of(Path::new("/definitely/not/here"));
    assert!(err.contains("/definitely/not/here"), "{err}");
}

#[test]
fn truncated_safetensors_is_an_error() {
    let d = tiny_copy();
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for cut in [bytes.len() - 100, 1000, 4] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = err_of(d.path());
        assert!(
            err.contains("invalid safetensors") && err.contains("model.safetensors"),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn wrong_missing_and_unexpected_tensors_are_all_named() {
    let mut raw = read_safetensors(&tiny_dir().join("model.safetensors")).unwrap();
    raw.get_mut("transformer.h.1.mlp.c_fc.weight")
        .unwrap()
        .shape = vec![256, 64];
    raw.remove("transformer.ln_f.bias");
    raw.insert(
        "transformer.h.0.attn.q_proj.weight".into(),
        RawTensor {
            shape: vec![1],
            data: vec![0.0],
        },
    );
    let d = tiny_copy();
    write_safetensors(&raw, &d.path().join("model.safetensors")).unwrap();
    let err = err_of(d.path());
    for needle in [
        "h.1.mlp.c_fc.weight has shape [256, 64], expected [64, 256]",
        "missing tensor ln_f.bias",
        "unexpected tensor transformer.h.0.attn.q_proj.weight",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

#[test]
fn unsupported_config_value_is_named() {
    let d = tiny_copy();
    let p = d.path().join("config.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("gelu_new", "silu");
    std::fs::write(&p, text).unwrap();
    let err = err_of(d.path());
    assert!(
        err.contains("activation_function") && err.contains("silu"),
        "{err}"
    );
}

#[test]
fn prompts_longer_than_the_context_and_empty_prompts_are_errors() {
    let lm = load(tiny_dir().to_str().unwrap(), &Device::flex()).unwrap();
    let long = vec![5u32; 129];
    match lm.model.logits(&TokenBatch::single(&long).unwrap()) {
        Err(Error::TooLong {
            len: 129,
            n_positions: 128,
        }) => {}
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert!(matches!(
        lm.model.generate(&[5; 120], &GenerationConfig::default()),
        Err(Error::TooLong { .. })
    ));
    assert!(matches!(
        lm.tokenizer.encode("", false),
        Err(Error::EmptyPrompt)
    ));
    assert!(matches!(TokenBatch::single(&[]), Err(Error::EmptyPrompt)));
    let err = lm
        .model
        .logits(&TokenBatch::single(&[5, 9999]).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, Error::TokenOutOfRange { id: 9999, .. }),
        "{err}"
    );
}

#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    let raw = read_safetensors(&tiny_dir().join("model.safetensors")).unwrap();
    for (tensor, at, value, index) in [
        (
            "transformer.h.1.mlp.c_fc.weight",
            3 * 256 + 7,
            f32::NAN,
            "[3, 7]",
        ),
        (
            "transformer.wte.weight",
            5 * 64 + 2,
            f32::INFINITY,
            "[5, 2]",
        ),
        ("transformer.ln_f.bias", 9, f32::NEG_INFINITY, "[9]"),
    ] {
        let mut bad = raw.clone();
        bad.get_mut(tensor).unwrap().data[at] = value;
        let d = tiny_copy();
        write_safetensors(&bad, &d.path().join("model.safetensors")).unwrap();
        let err = err_of(d.path());
        assert!(
            err.contains(&format!("tensor {tensor} holds {value} at index {index}"))
                && err.contains("--allow-non-finite"),
            "{tensor}: {err}"
        );
        // The opt-out loads it as it is, for people who study broken checkpoints.
        let source = burnlens_model::ModelSource::Dir(d.path().to_path_buf());
        let options = burnlens_model::LoadOptions {
            allow_non_finite: true,
        };
        let lm = burnlens_model::load_from_with(&source, &Device::flex(), options).unwrap();
        let logits = lm
            .model
            .logits(&TokenBatch::single(&[5, 6]).unwrap())
            .unwrap();
        let host = logits
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(host.iter().any(|x| !x.is_finite()), "{tensor}");
    }
}

#[test]
fn a_file_or_a_pickle_checkpoint_as_model_says_what_to_give_instead() {
    let err = err_of(&tiny_dir().join("config.json"));
    assert!(
        err.contains("config.json") && err.contains("is a file; give the directory"),
        "{err}"
    );
    let d = tiny_copy();
    std::fs::rename(
        d.path().join("model.safetensors"),
        d.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let err = err_of(d.path());
    assert!(
        err.contains("pytorch_model.bin")
            && err.contains("pickle checkpoints are refused")
            && err.contains("save_pretrained"),
        "{err}"
    );
}

#[test]
fn a_config_out_of_range_is_refused_before_the_weights_are_read() {
    let d = tiny_copy();
    let path = d.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let layers = v["n_layer"].as_u64().unwrap();
    let huge = text.replacen(
        &format!("\"n_layer\": {layers}"),
        "\"n_layer\": 1000000000",
        1,
    );
    assert_ne!(huge, text);
    std::fs::write(&path, huge).unwrap();
    let err = err_of(d.path());
    assert!(err.contains("n_layer = 1000000000"), "{err}");
}

#[test]
fn a_tokenizer_with_ids_beyond_the_embeddings_is_refused() {
    // A vocabulary with a gap: as many tokens as embeddings, but one id past them (the
    // fuzzer's find: counting tokens let it through, and its id then had no embedding).
    let d = tiny_copy();
    let path = d.path().join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let (last, _) = vocab
        .iter()
        .max_by_key(|(_, id)| id.as_u64().unwrap())
        .map(|(k, id)| (k.clone(), id.clone()))
        .unwrap();
    vocab.insert(last, 5000.into());
    std::fs::write(&path, tok.to_string()).unwrap();
    let err = err_of(d.path());
    assert!(
        err.contains("largest token id is 5000") && err.contains("641 embeddings"),
        "{err}"
    );
}

/// A checkpoint whose tensors need more memory than the machine has is refused before anything
/// is allocated, naming the file and both sizes, instead of being killed by the OOM killer: a
/// sparse file (no disk used) whose header declares a 512 GiB embedding.
#[test]
fn a_checkpoint_larger_than_free_memory_is_refused_before_allocating() {
    let d = tiny_copy();
    let p = d.path().join("model.safetensors");
    let numel: u64 = (1 << 20) * (1 << 17);
    let header = format!(
        "{{\"transformer.wte.weight\":{{\"dtype\":\"F32\",\"shape\":[{},{}],\"data_offsets\":[0,{}]}}}}",
        1u64 << 20,
        1u64 << 17,
        numel * 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(&p, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(bytes.len() as u64 + numel * 4)
        .unwrap();
    let start = std::time::Instant::now();
    let err = err_of(d.path());
    assert!(
        err.contains("model.safetensors")
            && err.contains("needs 524288 MiB to load as f32")
            && err.contains("MiB of memory is available"),
        "{err}"
    );
    // Refused from the header alone: nothing of the 512 GiB was read.
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}
