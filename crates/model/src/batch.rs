//! Token batches: ids, padding and the positions derived from them.

use crate::error::{Error, Result};

/// Which side of a shorter sequence the padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Pad before the tokens (what generation wants: every row ends at its last real token).
    #[default]
    Left,
    /// Pad after the tokens.
    Right,
}

/// A rectangular batch of token ids `[batch, pos]` with an optional attention mask.
///
/// Built on the host; the forward pass turns it into tensors. Positions are derived from the
/// mask (each row counts only its real tokens), so padding on either side leaves the real
/// tokens' logits unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    ids: Vec<u32>,
    mask: Option<Vec<bool>>,
    batch: usize,
    len: usize,
}

impl TokenBatch {
    /// One sequence, no padding.
    pub fn single(ids: &[u32]) -> Result<Self> {
        Self::new(vec![ids.to_vec()], None)
    }

    /// Rows of equal length, with an optional mask of the same shape (`true` = real token).
    pub fn new(rows: Vec<Vec<u32>>, mask: Option<Vec<Vec<bool>>>) -> Result<Self> {
        let batch = rows.len();
        if batch == 0 {
            return Err(Error::Shape("a batch needs at least one sequence".into()));
        }
        let len = rows[0].len();
        if len == 0 {
            return Err(Error::EmptyPrompt);
        }
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != len) {
            return Err(Error::Shape(format!(
                "row {i} has {} tokens, row 0 has {len}; pad the batch (TokenBatch::padded) or pass equal lengths",
                r.len()
            )));
        }
        let mask = match mask {
            None => None,
            Some(m) => {
                if m.len() != batch || m.iter().any(|r| r.len() != len) {
                    return Err(Error::Shape(format!(
                        "attention mask must be [{batch}, {len}] like the ids"
                    )));
                }
                if let Some(i) = m.iter().position(|r| !r.iter().any(|&x| x)) {
                    return Err(Error::Shape(format!(
                        "row {i} of the attention mask has no real token"
                    )));
                }
                let flat: Vec<bool> = m.into_iter().flatten().collect();
                (!flat.iter().all(|&x| x)).then_some(flat)
            }
        };
        Ok(Self {
            ids: rows.into_iter().flatten().collect(),
            mask,
            batch,
            len,
        })
    }

    /// Sequences of unequal length, padded to the longest with `pad_id` on `side`.
    pub fn padded(seqs: &[Vec<u32>], pad_id: u32, side: PaddingSide) -> Result<Self> {
        if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
            return Err(Error::Shape(format!("sequence {i} is empty")));
        }
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(seqs.len());
        let mut mask = Vec::with_capacity(seqs.len());
        for s in seqs {
            let pad = len - s.len();
            let (ids, m): (Vec<u32>, Vec<bool>) = match side {
                PaddingSide::Left => (
                    std::iter::repeat_n(pad_id, pad)
                        .chain(s.iter().copied())
                        .collect(),
                    std::iter::repeat_n(false, pad)
                        .chain(std::iter::repeat_n(true, s.len()))
                        .collect(),
                ),
                PaddingSide::Right => (
                    s.iter()
                        .copied()
                        .chain(std::iter::repeat_n(pad_id, pad))
                        .collect(),
                    std::iter::repeat_n(true, s.len())
                        .chain(std::iter::repeat_n(false, pad))
                        .collect(),
                ),
            };
            rows.push(ids);
            mask.push(m);
        }
        Self::new(rows, Some(mask))
    }

    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Length of every (padded) row.
    pub fn seq_len(&self) -> usize {
        self.len
    }

    /// The ids, row-major `[batch, pos]`.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// One row of ids.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[r * self.len..(r + 1) * self.len]
    }

    /// Rows `range` of the batch, with their part of the mask: what one part of a
    /// row-parallel forward runs (each row's logits do not depend on the other rows).
    ///
    /// # Errors
    /// An empty range, or one past the last row.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<Self> {
        if range.is_empty() || range.end > self.batch {
            return Err(Error::Shape(format!(
                "rows {range:?} of a batch of {} sequences",
                self.batch
            )));
        }
        let cells = range.start * self.len..range.end * self.len;
        Ok(Self {
            ids: self.ids[cells.clone()].to_vec(),
            mask: self.mask.as_ref().map(|m| m[cells].to_vec()),
            batch: range.len(),
            len: self.len,
        })
    }

    /// Whether the batch has any padding.
    pub fn has_padding(&self) -> bool {
        self.mask.is_some()
    }

    /// Whether token `(row, pos)` is real (not padding).
    pub fn is_real(&self, row: usize, pos: usize) -> bool {
        self.mask.as_ref().is_none_or(|m| m[row * self.len + pos])
    }

    /// The mask row-major `[batch, pos]` (`true` = real), all true when there is no padding.
    pub fn mask(&self) -> Vec<bool> {
        self.mask
            .clone()
            .unwrap_or_else(|| vec![true; self.ids.len()])
    }

    /// Number of real tokens in each row.
    pub fn real_lengths(&self) -> Vec<usize> {
        (0..self.batch)
            .map(|r| (0..self.len).filter(|&p| self.is_real(r, p)).count())
            .collect()
    }

    /// Positions `[batch, pos]` row-major: row `r`'s real tokens are numbered from `start[r]`;
    /// a padding token takes the position of the next real token (or the last one), as
    /// Hugging Face's `cumsum(mask) - 1` clamped at zero does.
    pub fn positions(&self, start: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.ids.len());
        for (r, &s) in start.iter().enumerate().take(self.batch) {
            let mut seen = 0usize;
            for p in 0..self.len {
                if self.is_real(r, p) {
                    out.push(s + seen);
                    seen += 1;
                } else {
                    out.push(s + seen.saturating_sub(1));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_mask() {
        let b = TokenBatch::padded(&[vec![1, 2, 3], vec![4]], 0, PaddingSide::Left).unwrap();
        assert_eq!(b.ids(), &[1, 2, 3, 0, 0, 4]);
        assert_eq!(b.positions(&[0, 0]), vec![0, 1, 2, 0, 0, 0]);
        let b = TokenBatch::padded(&[vec![1, 2, 3], vec![4]], 0, PaddingSide::Right).unwrap();
        assert_eq!(b.ids(), &[1, 2, 3, 4, 0, 0]);
        assert_eq!(b.positions(&[0, 5]), vec![0, 1, 2, 5, 5, 5]);
        assert_eq!(b.real_lengths(), vec![3, 1]);
    }

    #[test]
    fn ragged_and_empty_input_is_an_error() {
        assert!(matches!(TokenBatch::single(&[]), Err(Error::EmptyPrompt)));
        assert!(matches!(
            TokenBatch::new(vec![vec![1, 2], vec![3]], None),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            TokenBatch::new(vec![vec![1, 2]], Some(vec![vec![false, false]])),
            Err(Error::Shape(_))
        ));
    }

    #[test]
    fn rows_keep_their_ids_mask_and_positions() {
        let seqs = [vec![1, 2, 3], vec![4], vec![5, 6]];
        let b = TokenBatch::padded(&seqs, 0, PaddingSide::Left).unwrap();
        let tail = b.rows(1..3).unwrap();
        assert_eq!(tail.batch_size(), 2);
        assert_eq!(tail.ids(), &[0, 0, 4, 0, 5, 6]);
        assert_eq!(tail.mask(), vec![false, false, true, false, true, true]);
        assert_eq!(
            tail.positions(&[0, 0]),
            b.positions(&[0, 0, 0])[3..].to_vec()
        );
        for bad in [0..0, 2..4, 3..4] {
            assert!(
                matches!(b.rows(bad.clone()), Err(Error::Shape(_))),
                "rows {bad:?}"
            );
        }
    }
}
