//! Reading back numbers that were written as `null`: serde_json writes a `NaN` (a score with
//! nothing to average, such as the neighbourhood success of a batch with no neighbours) as
//! `null`, and these read it back as `NaN`, so a report can be rebuilt from its own items.

use serde::{Deserialize, Deserializer};

/// A number, or `null` read as `NaN`.
pub(crate) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// `(name, number)` pairs, `null` numbers read as `NaN`.
pub(crate) fn named<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    Ok(Vec::<(String, Option<f64>)>::deserialize(d)?
        .into_iter()
        .map(|(n, v)| (n, v.unwrap_or(f64::NAN)))
        .collect())
}
