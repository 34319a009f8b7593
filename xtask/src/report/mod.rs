//! Reports: every command's `index.html` is a [`Page`] (one design, `page.rs`) of figures from
//! `svg.rs` (heatmaps with colour bars, line plots, bar charts), with the attention-pattern view of
//! `attention.rs` where heads are shown; `runs.rs` lists every run under a folder.

mod attention;
mod page;
mod runs;
mod svg;

pub use attention::{HeadView, attention_view};
pub use page::{Page, Section};
pub use runs::write_runs_index;
pub use svg::{Heatmap, Scale, Series, bar_chart_svg, line_plot_svg, line_plot_svg_ticks};

/// A fraction as a percentage with one decimal (`0.931` → `93.1`), or `—` for a number that is
/// not one (a score with nothing to average).
pub fn percent(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}", 100.0 * v)
    } else {
        "—".into()
    }
}

/// Escapes text for SVG/HTML; control characters (which XML forbids, and which single tokens
/// can decode to) are written as Rust escapes (`\u{7}`).
pub fn escape(s: &str) -> String {
    let visible: String = s
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    visible
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A diverging colour for `v` in `[-1, 1]`: blue below zero, white at zero, red above.
pub fn diverging(v: f32) -> String {
    let v = if v.is_finite() {
        v.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let fade = |x: f32| (255.0 * (1.0 - x.abs())).round() as u8;
    if v >= 0.0 {
        format!("#{:02x}{:02x}{:02x}", 255, fade(v), fade(v))
    } else {
        format!("#{:02x}{:02x}{:02x}", fade(v), fade(v), 255)
    }
}

/// Axis labels for tokens: `"<index> <token as a Rust string literal>"`, so spaces and
/// control characters show.
pub fn token_labels(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{i} {s:?}"))
        .collect()
}

/// A sequential colour: white at `v` = 0 to `rgb` at `v` = 1 (clamped).
pub fn sequential(v: f32, rgb: (u8, u8, u8)) -> String {
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |c: u8| (255.0 + (f32::from(c) - 255.0) * v).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(rgb.0), mix(rgb.1), mix(rgb.2))
}

/// Adds ROME-style token-group results to `section`: `<stem>.svg`, a heatmap of the six groups
/// by layer (an empty group is drawn grey, "no value"; `rgb` gives a sequential scale from
/// zero, `None` a diverging one), and beside it `<stem>_lines.svg`, one line per group with its
/// 95% band.
#[allow(clippy::too_many_arguments)]
pub fn group_figures(
    section: &mut Section,
    stem: &str,
    heading: &str,
    title: &str,
    y_label: &str,
    groups: &[burnlens_experiments::GroupEffect],
    n_layers: usize,
    rgb: Option<(u8, u8, u8)>,
) {
    let rows: Vec<String> = groups.iter().map(|g| g.name.to_string()).collect();
    let cols: Vec<String> = (0..n_layers).map(|l| l.to_string()).collect();
    let values: Vec<f32> = groups
        .iter()
        .flat_map(|g| {
            if g.aie.is_empty() {
                vec![f32::NAN; n_layers]
            } else {
                g.aie.clone()
            }
        })
        .collect();
    let scale = match rgb {
        Some(rgb) => Scale::Sequential {
            low: 0.0,
            high: values
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(0.0, f32::max),
            rgb,
        },
        None => Scale::Diverging,
    };
    let heat = Heatmap::new(title, &rows, &cols, &values)
        .axes("layer", "token group", y_label)
        .scale(scale)
        .svg();
    section.figure(
        &format!("{heading}: by token group and layer"),
        &format!("{stem}.svg"),
        heat,
    );
    let series: Vec<Series> = groups
        .iter()
        .map(|g| Series {
            name: g.name,
            values: &g.aie,
            band: &g.interval,
        })
        .collect();
    section.figure(
        &format!("{heading}: by layer"),
        &format!("{stem}_lines.svg"),
        line_plot_svg(
            &format!("{title} (95% intervals)"),
            "layer",
            y_label,
            &series,
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_symmetric_and_white_at_zero() {
        assert_eq!(diverging(0.0), "#ffffff");
        assert_eq!(diverging(1.0), "#ff0000");
        assert_eq!(diverging(-1.0), "#0000ff");
        assert_eq!(diverging(5.0), "#ff0000");
        assert_eq!(diverging(f32::NAN), "#ffffff");
        assert_eq!(escape("a\u{7}b\n"), "a\\u{7}b\\n");
    }

    #[test]
    fn sequential_colours_run_from_white_to_the_colour() {
        assert_eq!(sequential(0.0, (0x54, 0x27, 0x88)), "#ffffff");
        assert_eq!(sequential(1.0, (0x54, 0x27, 0x88)), "#542788");
        assert_eq!(sequential(2.0, (0, 0, 0)), "#000000");
        let rows = ["a*".to_string()];
        let cols = ["0".to_string(), "1".to_string()];
        let svg = Heatmap::new("t", &rows, &cols, &[0.1, 0.3])
            .scale(Scale::Sequential {
                low: 0.1,
                high: 0.3,
                rgb: (0, 128, 0),
            })
            .svg();
        assert!(svg.contains("fill=\"#ffffff\"") && svg.contains("fill=\"#008000\""));
    }
}
