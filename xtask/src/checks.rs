//! Value parsers shared by every command's options: a NaN, an infinity, a negative noise level
//! or a zero step count is refused when the command line (or a recipe, which becomes one) is
//! parsed, with what would be accepted, before any model is loaded.
//!
//! clap names the option in its error (`invalid value 'nan' for '--noise-level <NOISE_LEVEL>':
//! …`), so each parser only says what is wrong with the value.

use std::str::FromStr;

/// A finite number.
fn finite<T>(s: &str) -> Result<T, String>
where
    T: FromStr + Into<f64> + Copy,
{
    let v: T = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !v.into().is_finite() {
        return Err(format!("{s} is not finite: give a finite number"));
    }
    Ok(v)
}

/// Any finite `f32` (a steering coefficient, a penalty).
pub fn finite_f32(s: &str) -> Result<f32, String> {
    finite(s)
}

/// A finite `f32` ≥ 0 (a noise level, a factor of σ).
pub fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v: f32 = finite(s)?;
    if v < 0.0 {
        return Err(format!("{s} is negative: give a number ≥ 0"));
    }
    Ok(v)
}

/// A finite `f64` ≥ 0 (a noise standard deviation, a KL weight).
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    let v: f64 = finite(s)?;
    if v < 0.0 {
        return Err(format!("{s} is negative: give a number ≥ 0"));
    }
    Ok(v)
}

/// A finite `f32` > 0 (a temperature).
pub fn positive_f32(s: &str) -> Result<f32, String> {
    let v: f32 = finite(s)?;
    if v <= 0.0 {
        return Err(format!("{s} is not positive: give a number > 0"));
    }
    Ok(v)
}

/// A finite `f64` > 0 (a learning rate, a norm clamp).
pub fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = finite(s)?;
    if v <= 0.0 {
        return Err(format!("{s} is not positive: give a number > 0"));
    }
    Ok(v)
}

/// A probability mass in `(0, 1]` (nucleus sampling's `top_p`).
pub fn top_p(s: &str) -> Result<f32, String> {
    let v: f32 = finite(s)?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!(
            "{s} is outside (0, 1]: give a probability mass above 0"
        ));
    }
    Ok(v)
}

/// A share in `[0, 1]`.
pub fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = finite(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s} is outside [0, 1]"));
    }
    Ok(v)
}

/// An integer ≥ 1 (a count, a window, a limit).
pub fn positive(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number ≥ 1"))?;
    if v == 0 {
        return Err("0 is not allowed: give at least 1".into());
    }
    Ok(v)
}

/// A text that is not empty (a prompt, an answer, a target): an empty one encodes to no
/// tokens, which would otherwise surface as "empty prompt" for an option that is not one.
pub fn text(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the text is empty: give at least one character (\" \" is a token)".into());
    }
    Ok(s.to_string())
}

/// The most integration or interpolation steps accepted: each costs a forward and a backward,
/// and 4096 is already far past where the integral converges on these models.
pub const MAX_STEPS: usize = 4096;

/// An integration step count in `1..=4096`.
pub fn steps(s: &str) -> Result<usize, String> {
    let v = positive(s)?;
    if v > MAX_STEPS {
        return Err(format!(
            "{v} steps is more than {MAX_STEPS} (each step is a forward and a backward pass)"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_values_are_refused() {
        for bad in ["nan", "NaN", "inf", "-inf", "1e39"] {
            assert!(finite_f32(bad).is_err(), "{bad}");
            assert!(non_negative_f32(bad).is_err(), "{bad}");
        }
        assert!(non_negative_f32("-0.5").is_err());
        assert_eq!(non_negative_f32("0").unwrap(), 0.0);
        assert!(positive_f32("0").is_err());
        assert!(positive_f64("-1").is_err());
        assert!(top_p("0").is_err() && top_p("1.5").is_err());
        assert_eq!(top_p("1").unwrap(), 1.0);
        assert!(fraction("1.01").is_err());
        assert!(positive("0").is_err() && positive("-2").is_err());
        assert_eq!(positive("3").unwrap(), 3);
        assert!(steps("100000000000").is_err() && steps("0").is_err());
        assert_eq!(steps("64").unwrap(), 64);
        assert!(finite_f32("x").unwrap_err().contains("not a number"));
        assert!(text("").is_err());
        assert_eq!(text(" ").unwrap(), " ");
    }
}
