//! Reading record files: a JSON array, JSON Lines, or CSV with a header row, each record
//! deserialized on its own so that an error names its file, record and field.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// The on-disk formats a record file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON array of objects (or an object of objects keyed by id).
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
}

impl Format {
    /// The format of a file, by extension (`.json`, `.jsonl`/`.ndjson`, `.csv`).
    ///
    /// # Errors
    /// Any other extension.
    pub fn of(path: &Path) -> Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Ok(Format::Json),
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            _ => Err(Error::Format {
                path: path.to_path_buf(),
                message: "unknown format: expected a .json, .jsonl or .csv file".into(),
            }),
        }
    }
}

/// The file's text, without the UTF-8 byte-order mark some editors write.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The records of a JSON object keyed by id, in id order: numerically when every key is an
/// integer ("0", "1", …, "10"), else by key.
fn keyed_records(map: serde_json::Map<String, Value>) -> Vec<Value> {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    if entries.iter().all(|(k, _)| k.trim().parse::<i64>().is_ok()) {
        entries.sort_by_key(|(k, _)| k.trim().parse::<i64>().unwrap_or_default());
    }
    entries.into_iter().map(|(_, v)| v).collect()
}

/// The raw records of a file as JSON values (CSV rows become objects of strings).
pub(crate) fn raw_records(path: &Path) -> Result<Vec<Value>> {
    let text = read_text(path)?;
    let format_err = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    match Format::of(path)? {
        Format::Json => {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| format_err(format!("invalid JSON: {e}")))?;
            match v {
                Value::Array(items) => Ok(items),
                Value::Object(map) => Ok(keyed_records(map)),
                _ => Err(format_err("expected a JSON array of records".into())),
            }
        }
        Format::Jsonl => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| Error::Record {
                    path: path.to_path_buf(),
                    record: i,
                    message: format!("line {}: invalid JSON: {e}", i + 1),
                })
            })
            .collect(),
        Format::Csv => {
            let rows = parse_csv(&text).map_err(format_err)?;
            let mut rows = rows.into_iter();
            let header = rows
                .next()
                .ok_or_else(|| format_err("empty CSV file (no header row)".into()))?;
            rows.enumerate()
                .map(|(i, row)| {
                    if row.len() != header.len() {
                        return Err(Error::Record {
                            path: path.to_path_buf(),
                            record: i,
                            message: format!(
                                "{} fields, but the header has {}",
                                row.len(),
                                header.len()
                            ),
                        });
                    }
                    Ok(Value::Object(
                        header
                            .iter()
                            .cloned()
                            .zip(row.into_iter().map(Value::String))
                            .collect(),
                    ))
                })
                .collect()
        }
    }
}

/// Deserializes every record of a file, naming file, record and field on error.
pub(crate) fn read_records<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    raw_records(path)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| Error::Record {
                path: path.to_path_buf(),
                record: i,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Splits CSV text into rows of fields (RFC 4180: quoted fields may hold commas, newlines and
/// doubled quotes). Blank lines are skipped.
pub(crate) fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let (mut in_quotes, mut quoted, mut line) = (false, false, 1usize);
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted field")),
            ',' => {
                row.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                quoted = false;
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push(std::mem::take(&mut row));
                } else {
                    row.clear();
                }
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("line {line}: unterminated quoted field"));
    }
    if !field.is_empty() || !row.is_empty() || quoted {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_quotes_commas_and_newlines() {
        let rows = parse_csv("a,b\n\"x, y\",\"say \"\"hi\"\"\"\n\n\"two\nlines\",z\r\n").unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["x, y".into(), "say \"hi\"".into()],
                vec!["two\nlines".into(), "z".into()],
            ]
        );
        assert!(parse_csv("a,\"b\n").is_err());
        assert!(parse_csv("a,b\"c\n").is_err());
    }
}
