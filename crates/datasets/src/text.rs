//! Text for activation statistics: plain text or JSONL files, tokenized, concatenated and cut
//! into rows of the model's context length.

use std::path::Path;

use burnlens_model::{Gpt2Tokenizer, TokenBatch};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::records::{Format, raw_records, read_text};

/// The texts of a file: for `.txt`, its paragraphs (separated by blank lines); for `.jsonl` or
/// `.json`, each record's `text` field.
///
/// # Errors
/// A missing file, or a record without a string `text` field (named with file and record).
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let is_txt = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    if is_txt {
        let text = read_text(path)?;
        return Ok(text
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect());
    }
    if Format::of(path)? == Format::Csv {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: "text batches read .txt, .json or .jsonl files".into(),
        });
    }
    raw_records(path)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v.get("text") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::Record {
                path: path.to_path_buf(),
                record: i,
                message: "field `text` is not a string".into(),
            }),
            None => Err(Error::Record {
                path: path.to_path_buf(),
                record: i,
                message: "missing field `text`".into(),
            }),
        })
        .collect()
}

/// Tokenizes texts, joins them with `<|endoftext|>`, and cuts the stream into rows of
/// `seq_len` tokens (the first of them `<|endoftext|>` when `prepend_bos`), dropping the
/// incomplete tail, as TransformerLens's `tokenize_and_concatenate` does.
///
/// # Errors
/// `seq_len` too small, tokenizer errors, or too little text for one row.
pub fn chunk_texts(
    texts: &[String],
    tokenizer: &Gpt2Tokenizer,
    seq_len: usize,
    prepend_bos: bool,
) -> Result<Vec<Vec<u32>>> {
    let eos = tokenizer.endoftext_id().ok_or_else(|| {
        Error::InvalidOption("the tokenizer has no <|endoftext|> token to join texts with".into())
    })?;
    let body = seq_len.saturating_sub(usize::from(prepend_bos));
    if body == 0 {
        return Err(Error::InvalidOption(format!(
            "seq_len {seq_len} leaves no room for text"
        )));
    }
    let mut stream = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            stream.push(eos);
        }
        stream.extend(tokenizer.encode(text, false)?);
    }
    if stream.len() < body {
        return Err(Error::InvalidOption(format!(
            "{} tokens of text are fewer than one row of {body}",
            stream.len()
        )));
    }
    Ok(stream
        .chunks_exact(body)
        .map(|c| {
            let mut row = Vec::with_capacity(seq_len);
            if prepend_bos {
                row.push(eos);
            }
            row.extend_from_slice(c);
            row
        })
        .collect())
}

/// Groups rows into batches of at most `batch_size`.
///
/// # Errors
/// A zero batch size.
pub fn batches(rows: &[Vec<u32>], batch_size: usize) -> Result<Vec<TokenBatch>> {
    if batch_size == 0 {
        return Err(Error::InvalidOption("batch size 0".into()));
    }
    rows.chunks(batch_size)
        .map(|c| Ok(TokenBatch::new(c.to_vec(), None)?))
        .collect()
}
