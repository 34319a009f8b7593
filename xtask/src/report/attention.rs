//! The attention-pattern view, as CircuitsVis shows it: a text's tokens coloured by the
//! attention one destination token pays them, for a head chosen from a list; hovering a token
//! makes it the destination, clicking pins it. Plain HTML and a few lines of inline
//! JavaScript over inline JSON data: no network, no library.

use anyhow::{Result, bail};

use super::escape;

/// One head's pattern over the text: `weights[dest * n + src]`.
pub struct HeadView {
    /// Its label (`L1H0`).
    pub label: String,
    /// The `[n, n]` attention weights, row-major (destination rows).
    pub weights: Vec<f32>,
}

/// The view's HTML (a `<div>` with its data and script), for the section of a page.
/// `initial` is the index in `heads` shown first; `id` must be unique on the page.
///
/// # Errors
/// No heads, `initial` out of range, or a pattern that is not `n × n` for the tokens.
pub fn attention_view(
    id: &str,
    tokens: &[String],
    heads: &[HeadView],
    initial: usize,
) -> Result<String> {
    let n = tokens.len();
    if heads.is_empty() || n == 0 {
        bail!("the attention view needs at least one head and one token");
    }
    if initial >= heads.len() {
        bail!(
            "the attention view's head {initial} is out of range: there are {} heads",
            heads.len()
        );
    }
    if let Some(h) = heads.iter().find(|h| h.weights.len() != n * n) {
        bail!(
            "head {}'s pattern has {} weights; {n} tokens need {}",
            h.label,
            h.weights.len(),
            n * n
        );
    }
    // Three decimals are what the colours can show; they keep the page small.
    let data = serde_json::json!({
        "tokens": tokens,
        "heads": heads.iter().map(|h| serde_json::json!({
            "label": h.label,
            "weights": h.weights.iter().map(|w| (w * 1000.0).round() / 1000.0).collect::<Vec<f32>>(),
        })).collect::<Vec<_>>(),
    });
    // `</` cannot end the script element early inside JSON text.
    let json = data.to_string().replace("</", "<\\/");
    let mut options = String::new();
    for (i, h) in heads.iter().enumerate() {
        options.push_str(&format!(
            "<option value=\"{i}\"{}>{}</option>",
            if i == initial { " selected" } else { "" },
            escape(&h.label)
        ));
    }
    let id = escape(id);
    Ok(format!(
        r#"<div class="attention-view" id="{id}">
<p><label>head <select>{options}</select></label> <span class="info"></span></p>
<div class="tokens"></div>
<script type="application/json">{json}</script>
<script>
(function () {{
  var root = document.getElementById("{id}");
  var data = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
  var select = root.querySelector("select"), box = root.querySelector(".tokens");
  var info = root.querySelector(".info"), n = data.tokens.length;
  var dest = n - 1, pinned = false;
  var spans = data.tokens.map(function (t, i) {{
    var s = document.createElement("span");
    s.className = "tok";
    s.textContent = t;
    s.addEventListener("mouseenter", function () {{ if (!pinned) {{ dest = i; draw(); }} }});
    s.addEventListener("click", function () {{ pinned = !(pinned && dest === i); dest = i; draw(); }});
    box.appendChild(s);
    return s;
  }});
  function draw() {{
    var w = data.heads[select.value].weights.slice(dest * n, dest * n + n);
    var max = 1e-9;
    for (var k = 0; k <= dest; k++) max = Math.max(max, w[k]);
    spans.forEach(function (s, k) {{
      var a = k <= dest ? w[k] : 0;
      s.style.background = "rgba(214, 39, 40, " + (a / max).toFixed(3) + ")";
      s.style.outline = k === dest ? "2px solid #222" : "none";
      s.title = k <= dest ? "attention from token " + dest + ": " + a.toFixed(3) : "after the destination";
    }});
    info.textContent = data.heads[select.value].label + ": attention from token " + dest + " " +
      JSON.stringify(data.tokens[dest]) + (pinned ? " (pinned: click it again to unpin)" : " (hover a token to choose another; click to pin)");
  }}
  select.addEventListener("change", draw);
  draw();
}})();
</script>
</div>
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_carries_every_head_and_refuses_a_head_out_of_range() {
        let tokens = vec!["a".to_string(), " </script>".to_string()];
        let heads = vec![
            HeadView {
                label: "L0H0".into(),
                weights: vec![1.0, 0.0, 0.25, 0.75],
            },
            HeadView {
                label: "L0H1".into(),
                weights: vec![1.0, 0.0, 0.5, 0.5],
            },
        ];
        let html = attention_view("v", &tokens, &heads, 1).unwrap();
        assert!(html.contains("<option value=\"1\" selected>L0H1</option>"));
        assert!(html.contains("[1.0,0.0,0.25,0.75]"));
        assert!(
            !html.contains(" </script>\""),
            "a token cannot close the script"
        );
        let e = attention_view("v", &tokens, &heads, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("head 2 is out of range: there are 2 heads"),
            "{e}"
        );
        let bad = [HeadView {
            label: "L0H0".into(),
            weights: vec![1.0],
        }];
        let e = attention_view("v", &tokens, &bad, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("L0H0") && e.contains("need 4"), "{e}");
    }
}
