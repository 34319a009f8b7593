//! The one page design every command's `index.html` uses: the title, the run (command, model,
//! backend, commit, date), the summary, a table of contents, then sections in order (the
//! dataset roll-up first, then the cases), each with its figures side by side (SVG inlined, so
//! a cell's value shows on hover; each figure also written as its own `.svg` file), notes and
//! tables. No external fonts, scripts or stylesheets: a report opens offline.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;

use super::escape;

/// The page's style sheet.
const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1800px}\
h1{margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.meta{color:#555;font-size:13px}.meta code{font-size:12px}\
nav ol{margin:4px 0;padding-left:22px}nav li{margin:2px 0}\
.figures{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}\
figure{margin:0}figcaption{font-size:13px;color:#444;margin-top:2px}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}code{background:#f6f6f6;padding:0 2px}\
.tokens .tok{white-space:pre;border:1px solid #ddd;padding:1px 2px;margin:1px;display:inline-block;cursor:pointer;font-family:monospace}";

/// One figure: its caption, the file it is also written to, and its SVG text.
struct Figure {
    caption: String,
    file: String,
    svg: String,
}

/// A section of the page: a heading, then notes, figures side by side and HTML (tables).
pub struct Section {
    heading: String,
    parts: Vec<Part>,
}

enum Part {
    Figures(Vec<Figure>),
    Html(String),
}

impl Section {
    /// Adds a figure (beside the section's previous figures, unless a note or table came
    /// between).
    pub fn figure(&mut self, caption: &str, file: &str, svg: String) -> &mut Self {
        let figure = Figure {
            caption: caption.to_string(),
            file: file.to_string(),
            svg,
        };
        match self.parts.last_mut() {
            Some(Part::Figures(row)) => row.push(figure),
            _ => self.parts.push(Part::Figures(vec![figure])),
        }
        self
    }

    /// Adds a paragraph of text (escaped).
    pub fn note(&mut self, text: &str) -> &mut Self {
        self.parts
            .push(Part::Html(format!("<p>{}</p>\n", escape(text))));
        self
    }

    /// Adds HTML of the command's own (already escaped).
    pub fn html(&mut self, html: &str) -> &mut Self {
        self.parts.push(Part::Html(html.to_string()));
        self
    }

    /// Adds a table of text cells (escaped).
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> &mut Self {
        let mut t = String::from("<table><tr>");
        for h in header {
            let _ = write!(t, "<th>{}</th>", escape(h));
        }
        t.push_str("</tr>\n");
        for row in rows {
            t.push_str("<tr>");
            for c in row {
                let _ = write!(t, "<td>{}</td>", escape(c));
            }
            t.push_str("</tr>\n");
        }
        t.push_str("</table>\n");
        self.parts.push(Part::Html(t));
        self
    }
}

/// A report page.
pub struct Page {
    title: String,
    summary: String,
    sections: Vec<Section>,
}

impl Page {
    /// A page with its title and a one-paragraph summary (plain text).
    pub fn new(title: &str, summary: &str) -> Self {
        Self {
            title: title.to_string(),
            summary: summary.to_string(),
            sections: Vec::new(),
        }
    }

    /// Replaces the summary (for a command that knows it only at the end).
    pub fn summary(&mut self, summary: &str) {
        self.summary = summary.to_string();
    }

    /// The section called `heading`: the existing one, or a new one appended.
    pub fn section(&mut self, heading: &str) -> &mut Section {
        if let Some(i) = self.sections.iter().position(|s| s.heading == heading) {
            return &mut self.sections[i];
        }
        self.sections.push(Section {
            heading: heading.to_string(),
            parts: Vec::new(),
        });
        self.sections.last_mut().expect("just pushed")
    }

    /// The first figure's file: what a list of runs shows for this one.
    pub fn headline(&self) -> Option<&str> {
        self.sections
            .iter()
            .flat_map(|s| &s.parts)
            .find_map(|p| match p {
                Part::Figures(f) => f.first().map(|f| f.file.as_str()),
                Part::Html(_) => None,
            })
    }

    /// How many figures the page has.
    pub fn figures(&self) -> usize {
        self.sections
            .iter()
            .flat_map(|s| &s.parts)
            .map(|p| match p {
                Part::Figures(f) => f.len(),
                Part::Html(_) => 0,
            })
            .sum()
    }

    /// The page's HTML, with the run described by `result`'s header fields.
    pub fn html(&self, result: &serde_json::Value) -> String {
        let mut s = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{t}</title><style>{CSS}</style></head>\n<body>\n<header><h1>{t}</h1>\n",
            t = escape(&self.title)
        );
        let field = |k: &str| result.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let commit = field("git_commit");
        let _ = writeln!(
            s,
            "<p class=\"meta\">{} · model <code>{}</code> · backend {} · commit <code>{}</code> · {}<br>command <code>{}</code></p>",
            escape(field("experiment")),
            escape(field("model")),
            escape(field("backend")),
            escape(&commit[..commit.len().min(12)]),
            escape(field("created")),
            escape(field("command")),
        );
        let _ = writeln!(
            s,
            "<p class=\"summary\">{}</p>\n<p><a href=\"result.json\">result.json</a> holds every number.</p></header>",
            escape(&self.summary)
        );
        if self.sections.len() > 1 {
            s.push_str("<nav><h2>Contents</h2><ol>\n");
            for (i, sec) in self.sections.iter().enumerate() {
                let _ = writeln!(s, "<li><a href=\"#s{i}\">{}</a></li>", escape(&sec.heading));
            }
            s.push_str("</ol></nav>\n");
        }
        for (i, sec) in self.sections.iter().enumerate() {
            let _ = writeln!(s, "<section id=\"s{i}\"><h2>{}</h2>", escape(&sec.heading));
            for part in &sec.parts {
                match part {
                    Part::Html(h) => s.push_str(h),
                    Part::Figures(row) => {
                        s.push_str("<div class=\"figures\">\n");
                        for f in row {
                            let _ = writeln!(
                                s,
                                "<figure>{}<figcaption>{} · <a href=\"{}\">SVG</a></figcaption></figure>",
                                f.svg.trim_end(),
                                escape(&f.caption),
                                escape(&f.file)
                            );
                        }
                        s.push_str("</div>\n");
                    }
                }
            }
            s.push_str("</section>\n");
        }
        s.push_str("</body></html>\n");
        s
    }

    /// Writes every figure's `.svg` file (each atomically: a temporary file renamed into
    /// place), `result.json` (with a `report` object: the title,
    /// summary and headline figure, for the list of runs) and `index.html` into `out`, and
    /// says so on stderr, naming `also`, what else the command wrote there (empty for nothing).
    ///
    /// # Errors
    /// A file that cannot be written (named).
    pub fn write(&self, out: &Path, result: &serde_json::Value, also: &str) -> Result<()> {
        let mut result = result.clone();
        if let Some(map) = result.as_object_mut() {
            map.insert(
                "report".into(),
                serde_json::json!({
                    "title": self.title, "summary": self.summary, "headline": self.headline(),
                }),
            );
        }
        for part in self.sections.iter().flat_map(|s| &s.parts) {
            if let Part::Figures(row) = part {
                for f in row {
                    crate::sweep::write_atomic(&out.join(&f.file), f.svg.as_bytes())?;
                }
            }
        }
        // Each file atomically (a temporary file renamed into place), result.json last but
        // for the page, so a folder with a result.json has its figures.
        crate::sweep::write_atomic(
            &out.join("result.json"),
            serde_json::to_string_pretty(&result)?.as_bytes(),
        )?;
        crate::sweep::write_atomic(&out.join("index.html"), self.html(&result).as_bytes())?;
        let n = self.figures();
        let mut extra = String::new();
        if n > 0 {
            let _ = write!(extra, ", {n} SVGs");
        }
        if !also.is_empty() {
            let _ = write!(extra, ", {also}");
        }
        eprintln!("wrote {}/{{result.json, index.html{extra}}}", out.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_listed_and_their_figures_sit_side_by_side() {
        let mut page = Page::new("Causal <tracing>", "two prompts");
        page.section("Average over 2 prompts")
            .figure("state", "a.svg", "<svg>a</svg>\n".into())
            .figure("mlp", "b.svg", "<svg>b</svg>\n".into());
        page.section("Case 1")
            .note("x < y")
            .table(&["edge", "score"], &[vec!["a->b".into(), "1.5".into()]]);
        let html = page.html(&serde_json::json!({"experiment": "causal_tracing", "model": "m"}));
        assert!(html.contains("<title>Causal &lt;tracing&gt;</title>"));
        assert!(html.contains("<a href=\"#s0\">Average over 2 prompts</a>"));
        assert!(html.contains("<a href=\"#s1\">Case 1</a>"));
        // Both figures in one row, inlined, each with a link to its file.
        let row = &html[html.find("<div class=\"figures\">").unwrap()..];
        let row = &row[..row.find("</div>").unwrap()];
        assert!(row.contains("<svg>a</svg>") && row.contains("<svg>b</svg>"));
        assert!(row.contains("href=\"a.svg\"") && row.contains("href=\"b.svg\""));
        assert!(html.contains("<p>x &lt; y</p>") && html.contains("<td>a-&gt;b</td>"));
        assert!(!html.contains("http"), "no external resource");
        assert_eq!(page.headline(), Some("a.svg"));
    }
}
