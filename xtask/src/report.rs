//! Report files: SVG heatmaps and the `index.html` that shows them.

use std::fmt::Write;

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

/// How a heatmap maps values to colours.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    /// Blue–white–red, symmetric around zero, scaled by the largest magnitude.
    Diverging,
    /// White at `low` to `rgb` at `high` (ROME's Purples / Greens / Reds, with `low` the
    /// corrupted score).
    Sequential {
        /// The value shown white.
        low: f32,
        /// The value shown in full colour.
        high: f32,
        /// The full colour.
        rgb: (u8, u8, u8),
    },
}

/// A heatmap of `values` (`rows × cols`, row-major) as SVG on a diverging scale (see
/// [`heatmap_svg_with`]).
pub fn heatmap_svg(title: &str, rows: &[String], cols: &[String], values: &[f32]) -> String {
    heatmap_svg_with(title, rows, cols, values, Scale::Diverging)
}

/// A heatmap of `values` (`rows × cols`, row-major) as SVG: one cell per value coloured on
/// `scale`, row and column labels, the value in each cell's tooltip, and the scale's range.
pub fn heatmap_svg_with(
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[f32],
    scale_kind: Scale,
) -> String {
    heatmap_svg_annotated(title, rows, cols, values, scale_kind, None)
}

/// [`heatmap_svg_with`], with a short text written in each cell (e.g. the logit lens's top
/// token), row-major like `values`.
pub fn heatmap_svg_annotated(
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[f32],
    scale_kind: Scale,
    texts: Option<&[String]>,
) -> String {
    assert_eq!(
        values.len(),
        rows.len() * cols.len(),
        "values must be rows × cols"
    );
    let cell = if texts.is_some() { 56.0 } else { 28.0 };
    let (left, top) = (110.0, 40.0);
    let bottom = 90.0;
    let width =
        (left + cell * cols.len() as f64 + 20.0).max(left + 8.0 * title.chars().count() as f64);
    let height = top + cell * rows.len() as f64 + bottom;
    let scale = values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    for (r, label) in rows.iter().enumerate() {
        let y = top + cell * r as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + cell * 0.65,
            escape(label)
        );
        for (c, _) in cols.iter().enumerate() {
            let v = values[r * cols.len() + c];
            let x = left + cell * c as f64;
            let _ = writeln!(
                s,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{}" stroke="#ddd"><title>{} / {}: {v:.4}</title></rect>"##,
                match scale_kind {
                    Scale::Diverging => diverging(v / scale),
                    Scale::Sequential { low, high, rgb } =>
                        sequential((v - low) / (high - low).max(1e-12), rgb),
                },
                escape(label),
                escape(&cols[c])
            );
            if let Some(texts) = texts {
                let text: String = texts[r * cols.len() + c].chars().take(8).collect();
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="middle" font-size="10" pointer-events="none">{}</text>"#,
                    x + cell / 2.0,
                    y + cell * 0.6,
                    escape(&text)
                );
            }
        }
    }
    for (c, label) in cols.iter().enumerate() {
        let x = left + cell * c as f64 + cell * 0.6;
        let y = top + cell * rows.len() as f64 + 6.0;
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{y}" transform="rotate(60 {x} {y})">{}</text>"#,
            escape(label)
        );
    }
    let legend = match scale_kind {
        Scale::Diverging => format!("scale: ±{scale:.4} (blue negative, red positive)"),
        Scale::Sequential { low, high, .. } => {
            format!("scale: {low:.4} (white) to {high:.4} (full colour)")
        }
    };
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{}" fill="#555">{}</text>"##,
        height - 8.0,
        escape(&legend)
    );
    s.push_str("</svg>\n");
    s
}

/// One line of a [`line_plot_svg`]: a name, a value per x, and a half-width band per x.
pub struct Series<'a> {
    /// Legend entry.
    pub name: &'a str,
    /// The values.
    pub values: &'a [f32],
    /// Half-width of the shaded band (e.g. a 95% interval); empty for none.
    pub band: &'a [f32],
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// A line plot with shaded bands (ROME's average-indirect-effect figure): `x_label` under
/// integer x ticks `0..n`, one line per series.
pub fn line_plot_svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, top, right, bottom) = (560.0, 320.0, 70.0, 40.0, 190.0, 50.0);
    let n = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let lo_hi = |s: &Series, i: usize| {
        let b = s.band.get(i).copied().unwrap_or(0.0);
        (s.values[i] - b, s.values[i] + b)
    };
    let mut y_min = f32::INFINITY;
    let mut y_max = f32::NEG_INFINITY;
    for s in series {
        for i in 0..s.values.len() {
            let (a, b) = lo_hi(s, i);
            if a.is_finite() && b.is_finite() {
                y_min = y_min.min(a);
                y_max = y_max.max(b);
            }
        }
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    if y_max - y_min < 1e-9 {
        y_max = y_min + 1e-3;
    }
    let px = |i: usize| left + (w - left - right) * i as f64 / (n.max(2) - 1) as f64;
    let py = |v: f32| top + (h - top - bottom) * f64::from((y_max - v) / (y_max - y_min));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let _ = writeln!(
        s,
        r##"<path d="M{x0} {y0} L{x0} {y1} L{x1} {y1}" fill="none" stroke="#333"/>"##
    );
    for (v, label) in [
        (y_min, y_min),
        (y_max, y_max),
        ((y_min + y_max) / 2.0, (y_min + y_max) / 2.0),
    ] {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{label:.3}</text>"#,
            x0 - 4.0,
            py(v) + 4.0
        );
    }
    for i in 0..n {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{i}</text>"#,
            px(i),
            y1 + 14.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        h - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
    for (k, line) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let m = line.values.len();
        if m == 0 {
            continue;
        }
        if !line.band.is_empty() {
            let mut d = String::new();
            for i in 0..m {
                let _ = write!(
                    d,
                    "{}{} {} ",
                    if i == 0 { "M" } else { "L" },
                    px(i),
                    py(lo_hi(line, i).1)
                );
            }
            for i in (0..m).rev() {
                let _ = write!(d, "L{} {} ", px(i), py(lo_hi(line, i).0));
            }
            let _ = writeln!(
                s,
                r#"<path d="{d}Z" fill="{colour}" fill-opacity="0.25" stroke="none"/>"#
            );
        }
        let points: Vec<String> = (0..m)
            .map(|i| format!("{},{}", px(i), py(line.values[i])))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(line.name)
        );
        let ly = top + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            x1 + 12.0,
            ly,
            x1 + 28.0,
            ly + 5.0,
            escape(line.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `result.json` and an `index.html` showing `figures` (already written) into `out`, and
/// says so on stderr.
pub fn write_report(
    out: &std::path::Path,
    result: &serde_json::Value,
    title: &str,
    summary: &str,
    figures: &[(String, String)],
) -> anyhow::Result<()> {
    let html = index_html(title, summary, figures);
    write_files(out, result, &html, &format!("{} SVGs", figures.len()))
}

/// Writes `result.json` and `index.html` (`html`, for a page of its own) into `out`, and says
/// so on stderr, naming `also`, what else the command wrote there (empty for nothing).
pub fn write_files(
    out: &std::path::Path,
    result: &serde_json::Value,
    html: &str,
    also: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let json = out.join("result.json");
    std::fs::write(&json, serde_json::to_string_pretty(result)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let index = out.join("index.html");
    std::fs::write(&index, html).with_context(|| format!("writing {}", index.display()))?;
    let also = if also.is_empty() {
        String::new()
    } else {
        format!(", {also}")
    };
    eprintln!("wrote {}/{{result.json, index.html{also}}}", out.display());
    Ok(())
}

/// Draws ROME-style token-group results: `<stem>.svg`, a heatmap of the six groups by layer
/// (an empty group is left blank; `rgb` gives a sequential scale from zero, `None` a diverging
/// one), and `<stem>_lines.svg`, one line per group with its 95% band. Returns the
/// `(heading, file)` pairs for the index.
#[allow(clippy::too_many_arguments)]
pub fn group_figures(
    out: &std::path::Path,
    stem: &str,
    heading: &str,
    title: &str,
    y_label: &str,
    groups: &[burnlens_experiments::GroupEffect],
    n_layers: usize,
    rgb: Option<(u8, u8, u8)>,
) -> anyhow::Result<Vec<(String, String)>> {
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
    let heat = format!("{stem}.svg");
    std::fs::write(
        out.join(&heat),
        heatmap_svg_with(title, &rows, &cols, &values, scale),
    )?;
    let series: Vec<Series> = groups
        .iter()
        .map(|g| Series {
            name: g.name,
            values: &g.aie,
            band: &g.interval,
        })
        .collect();
    let lines = format!("{stem}_lines.svg");
    std::fs::write(
        out.join(&lines),
        line_plot_svg(
            &format!("{title} (95% intervals)"),
            "layer",
            y_label,
            &series,
        ),
    )?;
    Ok(vec![
        (format!("{heading}: by token group and layer"), heat),
        (format!("{heading}: by layer"), lines),
    ])
}

/// An `index.html` showing each `(heading, svg file)` and linking `result.json`.
pub fn index_html(title: &str, summary: &str, figures: &[(String, String)]) -> String {
    index_html_with(title, summary, figures, "")
}

/// [`index_html`] with `extra`, HTML of the command's own (a table), after the figures.
pub fn index_html_with(
    title: &str,
    summary: &str,
    figures: &[(String, String)],
    extra: &str,
) -> String {
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body style=\"font-family: sans-serif\">\n<h1>{t}</h1>\n<p>{}</p>\n<p><a href=\"result.json\">result.json</a> holds every number.</p>\n",
        escape(summary),
        t = escape(title)
    );
    for (heading, file) in figures {
        let _ = writeln!(
            s,
            "<h2>{}</h2>\n<img src=\"{}\" alt=\"{}\">",
            escape(heading),
            escape(file),
            escape(heading)
        );
    }
    s.push_str(extra);
    s.push_str("</body></html>\n");
    s
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
    }

    #[test]
    fn sequential_colours_run_from_white_to_the_colour() {
        assert_eq!(sequential(0.0, (0x54, 0x27, 0x88)), "#ffffff");
        assert_eq!(sequential(1.0, (0x54, 0x27, 0x88)), "#542788");
        assert_eq!(sequential(2.0, (0, 0, 0)), "#000000");
        let svg = heatmap_svg_with(
            "t",
            &["a*".to_string()],
            &["0".to_string(), "1".to_string()],
            &[0.1, 0.3],
            Scale::Sequential {
                low: 0.1,
                high: 0.3,
                rgb: (0, 128, 0),
            },
        );
        assert!(svg.contains("fill=\"#ffffff\"") && svg.contains("fill=\"#008000\""));
    }

    #[test]
    fn line_plot_draws_every_series_with_its_band() {
        let a = [0.0, 0.5, 1.0];
        let band = [0.1, 0.1, 0.1];
        let svg = line_plot_svg(
            "AIE",
            "layer",
            "effect",
            &[
                Series {
                    name: "first",
                    values: &a,
                    band: &band,
                },
                Series {
                    name: "last",
                    values: &a,
                    band: &[],
                },
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("fill-opacity").count(), 1);
        assert!(svg.contains(">first<") && svg.contains(">last<"));
    }

    #[test]
    fn heatmap_has_one_cell_per_value_and_escapes_labels() {
        let rows = vec!["L0".to_string(), "L1".to_string()];
        let cols = vec!["<a>".to_string(), " b".to_string(), "c".to_string()];
        let svg = heatmap_svg("t & u", &rows, &cols, &[0.0, 0.5, -1.0, 1.0, 0.25, 0.0]);
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.contains("&lt;a&gt;") && svg.contains("t &amp; u"));
        assert_eq!(escape("a\u{7}b\n"), "a\\u{7}b\\n");
        assert!(svg.contains("fill=\"#0000ff\"") && svg.contains("fill=\"#ff0000\""));
        let html = index_html("x", "y", &[("resid_pre".into(), "resid_pre.svg".into())]);
        assert!(html.contains("<img src=\"resid_pre.svg\""));
    }
}
