//! Report files: SVG heatmaps and the `index.html` that shows them.

use std::fmt::Write;

/// Escapes text for SVG/HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
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

/// A heatmap of `values` (`rows × cols`, row-major) as SVG: one cell per value, coloured on a
/// diverging scale symmetric around zero (scaled by the largest magnitude), row and column
/// labels, the value in each cell's tooltip.
pub fn heatmap_svg(title: &str, rows: &[String], cols: &[String], values: &[f32]) -> String {
    assert_eq!(
        values.len(),
        rows.len() * cols.len(),
        "values must be rows × cols"
    );
    let (cell, left, top) = (28.0, 110.0, 40.0);
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
                diverging(v / scale),
                escape(label),
                escape(&cols[c])
            );
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
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{}" fill="#555">scale: ±{scale:.4} (blue negative, red positive)</text>"##,
        height - 8.0
    );
    s.push_str("</svg>\n");
    s
}

/// An `index.html` showing each `(heading, svg file)` and linking `result.json`.
pub fn index_html(title: &str, summary: &str, figures: &[(String, String)]) -> String {
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
    fn heatmap_has_one_cell_per_value_and_escapes_labels() {
        let rows = vec!["L0".to_string(), "L1".to_string()];
        let cols = vec!["<a>".to_string(), " b".to_string(), "c".to_string()];
        let svg = heatmap_svg("t & u", &rows, &cols, &[0.0, 0.5, -1.0, 1.0, 0.25, 0.0]);
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.contains("&lt;a&gt;") && svg.contains("t &amp; u"));
        assert!(svg.contains("fill=\"#0000ff\"") && svg.contains("fill=\"#ff0000\""));
        let html = index_html("x", "y", &[("resid_pre".into(), "resid_pre.svg".into())]);
        assert!(html.contains("<img src=\"resid_pre.svg\""));
    }
}
