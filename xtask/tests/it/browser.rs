//! Reports checked in a real browser: headless Chromium (Debian's `chromium`) renders a page
//! inside a harness page that inspects it once it has loaded (every image decoded, no script
//! from elsewhere, every SVG drawn with its shapes and labels, heatmaps with their cells and
//! colour bars, the attention view's tokens coloured, every in-page and local link resolving),
//! the browser's console stays silent, and a screenshot of the page is not blank.
//!
//! Without Chromium these checks skip and say why, unless `BURNLENS_REQUIRE_CHROMIUM=1` (as
//! `.ci/run` sets it), where its absence fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The Chromium binary, or `None` (with the reason printed) when it is absent and not required.
pub fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !path.is_empty() {
                return Some(PathBuf::from(path));
            }
        }
    }
    let required = std::env::var("BURNLENS_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "BURNLENS_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)"
    );
    eprintln!(
        "skipping the browser checks: no chromium on PATH (apt-get install chromium; CI requires it)"
    );
    None
}

/// The harness: loads the report in a frame and writes what it found as JSON into `#out`.
const HARNESS: &str = r##"<!doctype html><html><body><pre id="out">pending</pre>
<iframe id="f" src="PAGE" width="1400" height="1000"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var out = {};
  try {
    var d = this.contentDocument;
    out.title = d.title;
    out.images = Array.from(d.images).map(function (i) {
      return {src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0};
    });
    out.scripts = Array.from(d.scripts).map(function (s) { return s.getAttribute("src"); })
      .filter(function (s) { return s; });
    out.styles = Array.from(d.querySelectorAll("link[rel=stylesheet]")).length;
    out.svgs = Array.from(d.querySelectorAll("svg")).map(function (s) {
      var box = s.getBoundingClientRect();
      return {
        cls: s.getAttribute("class") || "",
        width: box.width, height: box.height,
        texts: s.querySelectorAll("text").length,
        shapes: s.querySelectorAll("rect, path, polyline, circle, line").length,
        cells: s.querySelectorAll("rect.cell").length,
        titled: s.querySelectorAll("rect.cell > title").length,
        bar: s.querySelectorAll("rect.colour-bar").length,
        ticks: s.querySelectorAll("text.tick").length,
        // Labels drawn outside the figure are clipped.
        clipped: Array.from(s.querySelectorAll("text")).filter(function (t) {
          var b = t.getBoundingClientRect();
          return b.width > 0 && (b.left < box.left - 1 || b.right > box.right + 1 ||
                                 b.top < box.top - 1 || b.bottom > box.bottom + 1);
        }).map(function (t) { return t.textContent; })
      };
    });
    var toks = Array.from(d.querySelectorAll(".attention-view .tok"));
    out.tokens = toks.length;
    out.coloured = toks.filter(function (t) {
      var m = /rgba\(.*,\s*([0-9.]+)\)/.exec(t.style.background);
      return m && parseFloat(m[1]) > 0.05;
    }).length;
    // Hovering the second token makes it the destination.
    if (toks.length > 1) {
      toks[1].dispatchEvent(new MouseEvent("mouseenter"));
      out.hovered = d.querySelector(".attention-view .info").textContent;
    }
    out.links = Array.from(d.querySelectorAll("a[href]")).map(function (a) {
      var h = a.getAttribute("href");
      return {href: h, ok: h.charAt(0) !== "#" || !!d.getElementById(h.slice(1))};
    });
  } catch (e) { out.error = String(e); }
  document.getElementById("out").textContent = JSON.stringify(out);
});
</script></body></html>"##;

/// What a page must show beyond the checks every page gets.
#[derive(Default)]
pub struct Expect {
    /// At least this many SVG figures.
    pub svgs: usize,
    /// At least this many images (the list of runs shows each run's headline figure).
    pub images: usize,
    /// An attention view with coloured tokens.
    pub attention_view: bool,
}

/// Renders `page` in Chromium and asserts what the module doc lists; returns what the harness
/// saw.
pub fn check_page(chromium: &Path, page: &Path, expect: &Expect) -> Value {
    let page = page.canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let harness = dir.path().join("harness.html");
    let url = format!("file://{}", page.display());
    std::fs::write(&harness, HARNESS.replace("PAGE", &url)).unwrap();
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let out = Command::new(chromium)
        .args(base)
        .arg("--dump-dom")
        .arg(format!("file://{}", harness.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed on {}",
        page.display()
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"out\">").expect("the harness's output") + 14;
    let json = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    let json = json
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let seen: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{}: the harness wrote {json:?}: {e}", page.display()));
    let name = page.display();
    assert!(seen.get("error").is_none(), "{name}: {}", seen["error"]);
    // Console messages (errors, uncaught exceptions, warnings) come out as CONSOLE lines.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "{name}: console messages:\n{}",
        console.join("\n")
    );
    for img in seen["images"].as_array().unwrap() {
        assert!(
            img["ok"].as_bool().unwrap(),
            "{name}: image {} did not load",
            img["src"]
        );
    }
    assert!(
        seen["images"].as_array().unwrap().len() >= expect.images,
        "{name}: {seen}"
    );
    assert_eq!(
        seen["scripts"].as_array().unwrap().len(),
        0,
        "{name}: a script from elsewhere"
    );
    assert_eq!(seen["styles"], 0, "{name}: a style sheet from elsewhere");
    let svgs = seen["svgs"].as_array().unwrap();
    assert!(
        svgs.len() >= expect.svgs,
        "{name}: {} SVGs, expected {}",
        svgs.len(),
        expect.svgs
    );
    for (i, s) in svgs.iter().enumerate() {
        assert!(
            s["width"].as_f64().unwrap() > 20.0 && s["height"].as_f64().unwrap() > 20.0,
            "{name}: SVG {i} is not drawn: {s}"
        );
        assert!(
            s["texts"].as_u64().unwrap() > 0 && s["shapes"].as_u64().unwrap() > 0,
            "{name}: SVG {i} is empty: {s}"
        );
        assert_eq!(
            s["clipped"].as_array().unwrap().len(),
            0,
            "{name}: SVG {i} clips labels: {s}"
        );
        if s["cls"] == "heatmap" {
            assert!(
                s["cells"].as_u64().unwrap() > 0,
                "{name}: heatmap {i} without cells"
            );
            assert_eq!(s["bar"], 40, "{name}: heatmap {i} without its colour bar");
            assert_eq!(
                s["ticks"], 5,
                "{name}: heatmap {i}'s colour bar has no ticks"
            );
        }
    }
    if expect.attention_view {
        assert!(
            seen["tokens"].as_u64().unwrap() > 1,
            "{name}: no attention view"
        );
        assert!(
            seen["coloured"].as_u64().unwrap() > 0,
            "{name}: no token coloured by attention"
        );
    }
    let folder = page.parent().unwrap();
    for link in seen["links"].as_array().unwrap() {
        let href = link["href"].as_str().unwrap();
        assert!(
            link["ok"].as_bool().unwrap(),
            "{name}: in-page link {href} has no target"
        );
        if !href.starts_with('#') && !href.contains("://") {
            assert!(
                folder.join(href).exists(),
                "{name}: link to a missing file {href}"
            );
        }
    }
    // The page as a person sees it: a screenshot that is not one colour.
    let shot = dir.path().join("shot.png");
    let ok = Command::new(chromium)
        .args(base)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,1400")
        .arg(&url)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "{name}: chromium took no screenshot");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let first = &pixels[..px];
    let differing = pixels.chunks(px).filter(|p| p != &first).count();
    let total = pixels.len() / px;
    assert!(
        differing * 100 > total,
        "{name}: the screenshot is blank ({differing} of {total} pixels differ from the first)"
    );
    seen
}

/// The panic message of checking `html` as a page (which must fail).
fn failure(chromium: &Path, html: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("index.html");
    std::fs::write(&page, html).unwrap();
    let caught = std::panic::catch_unwind(|| check_page(chromium, &page, &Expect::default()));
    let payload = caught.expect_err("the check should fail");
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_harness_catches_a_broken_page() {
    let Some(chromium) = chromium() else { return };
    let m = failure(
        &chromium,
        r#"<!doctype html><html><body><h1>x</h1><img src="missing.svg"><script>undefinedFn();</script></body></html>"#,
    );
    assert!(
        m.contains("console messages") && m.contains("undefinedFn"),
        "{m}"
    );
    // Without the script, the missing image is what fails.
    let m = failure(
        &chromium,
        r#"<!doctype html><html><body><h1>x</h1><img src="missing.svg"></body></html>"#,
    );
    assert!(m.contains("image \"missing.svg\" did not load"), "{m}");
    // A label drawn outside its figure is clipped.
    let m = failure(
        &chromium,
        r#"<!doctype html><html><body><h1>x</h1><svg width="60" height="60"><rect width="5" height="5"/><text x="40" y="30">far too long a label</text></svg></body></html>"#,
    );
    assert!(
        m.contains("clips labels") && m.contains("far too long"),
        "{m}"
    );
    // And a blank page is blank.
    let m = failure(&chromium, "<!doctype html><html><body></body></html>");
    assert!(m.contains("the screenshot is blank"), "{m}");
}
