//! The report's SVG figures: heatmaps with a colour bar, axis titles, unclipped tick labels,
//! marked rows or columns and every cell's value on hover; line plots with bands, a legend and
//! every point's value on hover. Plain SVG text with no ids (figures are inlined into one page
//! side by side, where ids would collide) and no external fonts.

use std::fmt::Write;

use super::{diverging, escape, sequential};

/// The width of `s` in pixels at `size`, estimated generously (sans-serif averages about 0.55
/// em a character; 0.62 leaves room for wide glyphs), so labels are never clipped.
pub fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.62
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

/// A number for a tick or a tooltip: three significant digits, no exponent for ordinary sizes.
pub fn number(v: f32) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    }
}

/// A heatmap: `values` is `rows × cols`, row-major; NaN cells are drawn grey ("no value").
pub struct Heatmap<'a> {
    title: &'a str,
    rows: &'a [String],
    cols: &'a [String],
    values: &'a [f32],
    x_title: &'a str,
    y_title: &'a str,
    value_title: &'a str,
    scale: Scale,
    texts: Option<&'a [String]>,
    marked_rows: &'a [usize],
    marked_cols: &'a [usize],
}

impl<'a> Heatmap<'a> {
    /// A heatmap on the diverging scale with no axis titles.
    ///
    /// # Panics
    /// If `values` is not `rows × cols` (a bug in the caller, not bad input).
    pub fn new(title: &'a str, rows: &'a [String], cols: &'a [String], values: &'a [f32]) -> Self {
        assert_eq!(
            values.len(),
            rows.len() * cols.len(),
            "values must be rows × cols"
        );
        Self {
            title,
            rows,
            cols,
            values,
            x_title: "",
            y_title: "",
            value_title: "",
            scale: Scale::Diverging,
            texts: None,
            marked_rows: &[],
            marked_cols: &[],
        }
    }

    /// The titles of the x axis (columns), the y axis (rows) and the colour bar (the value).
    pub fn axes(mut self, x: &'a str, y: &'a str, value: &'a str) -> Self {
        (self.x_title, self.y_title, self.value_title) = (x, y, value);
        self
    }

    /// The colour scale.
    pub fn scale(mut self, scale: Scale) -> Self {
        self.scale = scale;
        self
    }

    /// A short text in each cell (row-major, like the values), e.g. the logit lens's top token.
    pub fn texts(mut self, texts: &'a [String]) -> Self {
        assert_eq!(texts.len(), self.values.len(), "one text per cell");
        self.texts = Some(texts);
        self
    }

    /// Rows to mark (their labels bold, with a marker): e.g. the subject's tokens.
    pub fn mark_rows(mut self, rows: &'a [usize]) -> Self {
        self.marked_rows = rows;
        self
    }

    /// Columns to mark.
    pub fn mark_cols(mut self, cols: &'a [usize]) -> Self {
        self.marked_cols = cols;
        self
    }

    /// The range the colours span: `(low, high)`.
    fn range(&self) -> (f32, f32) {
        match self.scale {
            Scale::Diverging => {
                let m = self
                    .values
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold(0.0f32, |m, v| m.max(v.abs()))
                    .max(1e-12);
                (-m, m)
            }
            Scale::Sequential { low, high, .. } => (low, high),
        }
    }

    fn colour(&self, v: f32) -> String {
        if !v.is_finite() {
            return "#e6e6e6".into();
        }
        match self.scale {
            Scale::Diverging => diverging(v / self.range().1),
            Scale::Sequential { low, high, rgb } => {
                sequential((v - low) / (high - low).max(1e-12), rgb)
            }
        }
    }

    /// The SVG text.
    pub fn svg(&self) -> String {
        let cell = if self.texts.is_some() { 56.0 } else { 26.0 };
        let font = 11.0;
        let label_w = |labels: &[String], marked: &[usize]| {
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| text_width(l, font) + if marked.contains(&i) { 12.0 } else { 0.0 })
                .fold(0.0, f64::max)
        };
        let (row_w, col_w) = (
            label_w(self.rows, self.marked_rows),
            label_w(self.cols, self.marked_cols),
        );
        let y_title_w = if self.y_title.is_empty() { 0.0 } else { 20.0 };
        let left = 10.0 + y_title_w + row_w + 8.0;
        let top = 34.0;
        let grid_w = cell * self.cols.len() as f64;
        let grid_h = cell * self.rows.len() as f64;
        // Column labels are rotated 60°: they reach down by sin(60°) of their length.
        let x_title_h = if self.x_title.is_empty() { 0.0 } else { 22.0 };
        let bottom = 10.0 + col_w * 0.87 + 12.0 + x_title_h;
        let (low, high) = self.range();
        let ticks: Vec<f32> = (0..5)
            .map(|i| low + (high - low) * i as f32 / 4.0)
            .collect();
        let tick_w = ticks
            .iter()
            .map(|t| text_width(&number(*t), font))
            .fold(0.0, f64::max);
        let bar_x = left + grid_w + 24.0;
        let bar_h = grid_h.clamp(80.0, 240.0);
        let value_title_w = if self.value_title.is_empty() {
            0.0
        } else {
            20.0
        };
        // Axis titles are centred on what they name, moved inwards where they are longer than
        // it, and the figure grows to hold them.
        let half = |t: &str| text_width(t, font) / 2.0 + 4.0;
        let x_title_x = (left + grid_w / 2.0).max(half(self.x_title));
        let y_title_y = (top + grid_h / 2.0).max(half(self.y_title));
        let value_title_y = (top + bar_h / 2.0).max(half(self.value_title));
        let width = (bar_x + 14.0 + 6.0 + tick_w + 8.0 + value_title_w)
            .max(10.0 + text_width(self.title, 14.0))
            .max(x_title_x + half(self.x_title));
        // The last column's label, rotated, reaches right of the grid by cos(60°) of its length.
        let width = width.max(left + grid_w + col_w * 0.5 + 10.0).ceil();
        let height = (top + grid_h.max(bar_h) + bottom)
            .max(y_title_y + half(self.y_title))
            .max(value_title_y + half(self.value_title))
            .ceil();
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{font}">"#
        );
        let _ = writeln!(
            s,
            r#"<text class="title" x="10" y="20" font-size="14">{}</text>"#,
            escape(self.title)
        );
        for (r, label) in self.rows.iter().enumerate() {
            let y = top + cell * r as f64;
            let marked = self.marked_rows.contains(&r);
            let _ = writeln!(
                s,
                r#"<text class="row-label" x="{}" y="{}" text-anchor="end"{}>{}{}</text>"#,
                left - 6.0,
                y + cell * 0.62,
                if marked { r#" font-weight="bold""# } else { "" },
                escape(label),
                if marked { " ◀" } else { "" }
            );
            for (c, col) in self.cols.iter().enumerate() {
                let v = self.values[r * self.cols.len() + c];
                let x = left + cell * c as f64;
                let _ = writeln!(
                    s,
                    r##"<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{}" stroke="#ddd"><title>{} · {}: {}</title></rect>"##,
                    self.colour(v),
                    escape(label),
                    escape(col),
                    if v.is_finite() {
                        format!("{v:.4}")
                    } else {
                        "no value".into()
                    }
                );
                if let Some(texts) = self.texts {
                    let text: String = texts[r * self.cols.len() + c].chars().take(8).collect();
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
        for (c, label) in self.cols.iter().enumerate() {
            let x = left + cell * c as f64 + cell * 0.5;
            let y = top + grid_h + 8.0;
            let marked = self.marked_cols.contains(&c);
            let _ = writeln!(
                s,
                r#"<text class="col-label" x="{x}" y="{y}" transform="rotate(60 {x} {y})"{}>{}{}</text>"#,
                if marked { r#" font-weight="bold""# } else { "" },
                if marked { "▲ " } else { "" },
                escape(label)
            );
        }
        if !self.x_title.is_empty() {
            let _ = writeln!(
                s,
                r#"<text class="axis-title" x="{x_title_x}" y="{}" text-anchor="middle">{}</text>"#,
                height - 8.0,
                escape(self.x_title)
            );
        }
        if !self.y_title.is_empty() {
            let (x, y) = (16.0, y_title_y);
            let _ = writeln!(
                s,
                r#"<text class="axis-title" x="{x}" y="{y}" transform="rotate(-90 {x} {y})" text-anchor="middle">{}</text>"#,
                escape(self.y_title)
            );
        }
        // The colour bar: stacked bands from high (top) to low, with ticks.
        let steps = 40;
        let band = bar_h / f64::from(steps);
        for i in 0..steps {
            let v = high - (high - low) * (i as f32 + 0.5) / steps as f32;
            let _ = writeln!(
                s,
                r#"<rect class="colour-bar" x="{bar_x}" y="{}" width="14" height="{}" fill="{}"><title>{}</title></rect>"#,
                top + band * f64::from(i),
                band + 0.5,
                self.colour(v),
                number(v)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{bar_x}" y="{top}" width="14" height="{bar_h}" fill="none" stroke="#888"/>"##
        );
        for t in &ticks {
            let y = top + bar_h * f64::from((high - t) / (high - low).max(1e-12));
            let _ = writeln!(
                s,
                r##"<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="#333"/><text class="tick" x="{}" y="{}">{}</text>"##,
                bar_x + 14.0,
                bar_x + 18.0,
                bar_x + 20.0,
                y + 4.0,
                number(*t)
            );
        }
        if !self.value_title.is_empty() {
            let (x, y) = (bar_x + 20.0 + tick_w + 12.0, value_title_y);
            let _ = writeln!(
                s,
                r#"<text class="axis-title" x="{x}" y="{y}" transform="rotate(-90 {x} {y})" text-anchor="middle">{}</text>"#,
                escape(self.value_title)
            );
        }
        s.push_str("</svg>\n");
        s
    }
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

impl<'a> Series<'a> {
    /// One series per name, without bands: `names[i]` with `values[i]`.
    pub fn lines(names: &'a [String], values: &'a [Vec<f32>]) -> Vec<Series<'a>> {
        names
            .iter()
            .zip(values)
            .map(|(n, v)| Series {
                name: n,
                values: v,
                band: &[],
            })
            .collect()
    }
}

/// matplotlib's ten "tab10" colours: ten series before one repeats.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Five y ticks from `y_min` to `y_max` with their grid lines, `py` mapping a value to its y.
fn y_ticks(
    s: &mut String,
    (x0, x1): (f64, f64),
    (y_min, y_max): (f32, f32),
    py: &dyn Fn(f32) -> f64,
) {
    for k in 0..5 {
        let v = y_min + (y_max - y_min) * k as f32 / 4.0;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{}" x2="{x0}" y1="{y}" y2="{y}" stroke="#333"/><line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#eee"/><text class="tick" x="{}" y="{}" text-anchor="end">{}</text>"##,
            x0 - 4.0,
            x0 - 6.0,
            y + 4.0,
            number(v)
        );
    }
}

/// The y axis's title, turned, beside the plot from `y0` to `y1`.
fn y_axis_title(s: &mut String, y0: f64, y1: f64, y_label: &str) {
    let _ = writeln!(
        s,
        r#"<text class="axis-title" x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

/// A line plot with shaded bands (ROME's average-indirect-effect figure): `x_label` under
/// integer x ticks `0..n`, one line per series (series without values are left out of the
/// plot and the legend), every point's value on hover.
pub fn line_plot_svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    line_plot_svg_ticks(title, x_label, y_label, series, &[])
}

/// [`line_plot_svg`] with a label for each x tick (`ticks[i]` under x = i) instead of `i`.
pub fn line_plot_svg_ticks(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    ticks: &[String],
) -> String {
    let drawn: Vec<&Series> = series.iter().filter(|s| !s.values.is_empty()).collect();
    let legend_w = drawn
        .iter()
        .map(|s| text_width(s.name, 11.0))
        .fold(0.0, f64::max);
    let (plot_w, h, left, top, bottom) = (380.0, 320.0, 74.0, 40.0, 50.0);
    let right = 40.0 + legend_w;
    let w = (left + plot_w + right)
        .max(10.0 + text_width(title, 14.0))
        .ceil();
    let n = drawn.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let lo_hi = |s: &Series, i: usize| {
        let b = s.band.get(i).copied().unwrap_or(0.0);
        (s.values[i] - b, s.values[i] + b)
    };
    let mut y_min = f32::INFINITY;
    let mut y_max = f32::NEG_INFINITY;
    for s in &drawn {
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
    let (x0, x1, y0, y1) = (left, left + plot_w, top, h - bottom);
    let px = |i: usize| x0 + plot_w * i as f64 / (n.max(2) - 1) as f64;
    let py = |v: f32| y0 + (y1 - y0) * f64::from((y_max - v) / (y_max - y_min));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="line-plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text class="title" x="10" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<path d="M{x0} {y0} L{x0} {y1} L{x1} {y1}" fill="none" stroke="#333"/>"##
    );
    y_ticks(&mut s, (x0, x1), (y_min, y_max), &py);
    // At most ~20 x tick labels.
    let every = n.div_ceil(20).max(1);
    for i in (0..n).step_by(every) {
        let label = ticks.get(i).cloned().unwrap_or_else(|| i.to_string());
        let _ = writeln!(
            s,
            r#"<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>"#,
            px(i),
            y1 + 14.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text class="axis-title" x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        h - 12.0,
        escape(x_label)
    );
    y_axis_title(&mut s, y0, y1, y_label);
    for (k, line) in drawn.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let m = line.values.len();
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
        // A value that is not a number (a score with nothing to average) is a gap.
        for run in (0..m)
            .collect::<Vec<_>>()
            .split(|&i| !line.values[i].is_finite())
            .filter(|r| !r.is_empty())
        {
            let points: Vec<String> = run
                .iter()
                .map(|&i| format!("{},{}", px(i), py(line.values[i])))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline class="series" points="{}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></polyline>"#,
                points.join(" "),
                escape(line.name)
            );
        }
        for (i, v) in line
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
        {
            let band = line
                .band
                .get(i)
                .map_or(String::new(), |b| format!(" ± {}", number(*b)));
            let _ = writeln!(
                s,
                r#"<circle cx="{}" cy="{}" r="3" fill="{colour}"><title>{} at {i}: {}{band}</title></circle>"#,
                px(i),
                py(*v),
                escape(line.name),
                number(*v)
            );
        }
        let ly = top + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{colour}"/><text class="legend" x="{}" y="{}">{}</text>"#,
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

/// A grouped bar chart: one group of bars per label (`labels[i]` under group `i`), one bar
/// per series in each group (`series[k].values[i]`, its colour in the legend), every bar's
/// value on hover; a value that is not a number draws no bar. Bars start at zero.
pub fn bar_chart_svg(title: &str, y_label: &str, labels: &[String], series: &[Series]) -> String {
    let legend_w = series
        .iter()
        .map(|s| text_width(s.name, 11.0))
        .fold(0.0, f64::max);
    let n = labels.len().max(1);
    let k = series.len().max(1);
    let group_w = (12.0 * k as f64 + 10.0).max(28.0);
    let (plot_w, h, left, top, bottom) = ((group_w * n as f64).max(240.0), 320.0, 74.0, 40.0, 70.0);
    let right = 40.0 + legend_w;
    let w = (left + plot_w + right)
        .max(10.0 + text_width(title, 14.0))
        .ceil();
    let finite = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite());
    let (y_min, mut y_max) = finite.fold((0.0f32, 0.0f32), |(a, b), v| (a.min(v), b.max(v)));
    if y_max - y_min < 1e-9 {
        y_max = y_min + 1.0;
    }
    let (x0, x1, y0, y1) = (left, left + plot_w, top, h - bottom);
    let py = |v: f32| y0 + (y1 - y0) * f64::from((y_max - v) / (y_max - y_min));
    let gw = plot_w / n as f64;
    let bw = ((gw - 8.0) / k as f64).max(2.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="bar-chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text class="title" x="10" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    y_ticks(&mut s, (x0, x1), (y_min, y_max), &py);
    let zero = py(0.0);
    let _ = writeln!(
        s,
        r##"<path d="M{x0} {y0} L{x0} {y1}" fill="none" stroke="#333"/><line x1="{x0}" x2="{x1}" y1="{zero}" y2="{zero}" stroke="#333"/>"##
    );
    for (i, label) in labels.iter().enumerate() {
        let gx = x0 + gw * i as f64 + 4.0;
        for (j, ser) in series.iter().enumerate() {
            let Some(&v) = ser.values.get(i) else {
                continue;
            };
            if !v.is_finite() {
                continue;
            }
            let (ya, yb) = (py(v.max(0.0)), py(v.min(0.0)));
            let _ = writeln!(
                s,
                r#"<rect class="bar" x="{}" y="{ya}" width="{bw}" height="{}" fill="{}"><title>{} · {}: {}</title></rect>"#,
                gx + bw * j as f64,
                (yb - ya).max(0.5),
                PALETTE[j % PALETTE.len()],
                escape(label),
                escape(ser.name),
                number(v)
            );
        }
        let cx = gx + (gw - 8.0) / 2.0;
        let _ = writeln!(
            s,
            r#"<text class="tick" x="{cx}" y="{}" text-anchor="end" transform="rotate(-40 {cx} {})">{}</text>"#,
            y1 + 14.0,
            y1 + 14.0,
            escape(label)
        );
    }
    y_axis_title(&mut s, y0, y1, y_label);
    for (j, ser) in series.iter().enumerate() {
        let ly = top + 16.0 * j as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="8" fill="{}"/><text class="legend" x="{}" y="{}">{}</text>"#,
            x1 + 12.0,
            ly,
            PALETTE[j % PALETTE.len()],
            x1 + 28.0,
            ly + 8.0,
            escape(ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_heatmap_has_its_cells_colour_bar_titles_and_room_for_every_label() {
        let rows = labels(&["First subsequent token", "L1"]);
        let cols = labels(&["<a>", " b", "a much longer column label"]);
        let values = [0.0, 0.5, -1.0, 1.0, f32::NAN, 0.0];
        let svg = Heatmap::new("t & u", &rows, &cols, &values)
            .axes("position", "layer", "score")
            .mark_cols(&[1])
            .svg();
        assert_eq!(svg.matches(r#"class="cell""#).count(), 6);
        assert_eq!(svg.matches(r#"class="colour-bar""#).count(), 40);
        assert_eq!(svg.matches(r#"class="tick""#).count(), 5);
        assert!(svg.contains("&lt;a&gt;") && svg.contains("t &amp; u"));
        assert!(svg.contains(">position<") && svg.contains(">layer<") && svg.contains(">score<"));
        assert!(svg.contains("no value") && svg.contains("▲  b"));
        assert!(svg.contains(r##"fill="#0000ff""##) && svg.contains(r##"fill="#ff0000""##));
        // The longest row label ends left of the grid and starts right of the y title.
        let left = |svg: &str| -> f64 {
            let i = svg.find(r#"class="cell" x=""#).unwrap() + 16;
            svg[i..].split('"').next().unwrap().parse().unwrap()
        };
        assert!(left(&svg) - 6.0 >= 10.0 + 20.0 + text_width("First subsequent token", 11.0));
        // Every rotated column label fits inside the height.
        let height: f64 = {
            let i = svg.find("height=\"").unwrap() + 8;
            svg[i..].split('"').next().unwrap().parse().unwrap()
        };
        let grid_bottom = 34.0 + 2.0 * 26.0;
        assert!(
            height >= grid_bottom + 8.0 + 0.87 * text_width("a much longer column label", 11.0)
        );
    }

    /// The height of each `<rect class="bar" …>`, in order.
    fn bar_heights(svg: &str) -> Vec<f64> {
        svg.split(r#"<rect class="bar""#)
            .skip(1)
            .map(|r| {
                let h = r.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn bars_are_proportional_to_their_values_and_a_nan_draws_none() {
        let labels = labels(&["embed", "mlp.0", "mlp.1"]);
        let (a, b) = ([1.0, 4.0, f32::NAN], [2.0, 0.5, 3.0]);
        let svg = bar_chart_svg(
            "t",
            "%",
            &labels,
            &[
                Series {
                    name: "a",
                    values: &a,
                    band: &[],
                },
                Series {
                    name: "b",
                    values: &b,
                    band: &[],
                },
            ],
        );
        let h = bar_heights(&svg);
        assert_eq!(h.len(), 5, "no bar for the NaN");
        // Drawn group by group: a₀, b₀, a₁, b₁, b₂; heights ∝ values from a zero baseline.
        let unit = h[0] / 1.0;
        for (got, want) in h.iter().zip([1.0, 2.0, 4.0, 0.5, 3.0]) {
            assert!((got / unit - want).abs() < 1e-6, "{h:?}");
        }
        assert!(svg.contains("mlp.1 · b: 3"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn a_line_plot_leaves_a_gap_at_a_nan() {
        let v = [1.0, 2.0, f32::NAN, 4.0, 5.0];
        let svg = line_plot_svg(
            "t",
            "x",
            "y",
            &[Series {
                name: "s",
                values: &v,
                band: &[],
            }],
        );
        assert_eq!(svg.matches("<polyline").count(), 2, "two runs of points");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.12345), "0.123");
        assert_eq!(number(-12.345), "-12.3");
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(1e-5), "1.00e-5");
        assert_eq!(number(f32::NAN), "n/a");
    }

    #[test]
    fn the_legend_has_no_gap_for_an_empty_series() {
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
                    name: "empty",
                    values: &[],
                    band: &[],
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
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains(">first<") && svg.contains(">last<") && !svg.contains(">empty<"));
        // Legend rows at top + 0 and top + 16: the empty series takes no row.
        assert!(svg.contains(r#"y="40" width="12""#) && svg.contains(r#"y="56" width="12""#));
    }
}
