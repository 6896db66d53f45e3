"""The review report: one self-contained HTML file (no CDN, images inlined), readable offline."""

from __future__ import annotations

import base64
import html
import json
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f5f6f8}
header{background:#1d232a;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:20px}
header p{margin:0;color:#c4ccd6}main{padding:20px 28px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:120px;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:22px}.ok{color:#12805c}.failed{color:#c0392b}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:6px 10px;border-bottom:1px solid #e5e8ec;text-align:left;vertical-align:top}
th{cursor:pointer;background:#eef1f4;user-select:none}th:after{content:" \\2195";color:#99a}
.pair{display:flex;gap:10px;flex-wrap:wrap}.pair figure{margin:0}.pair img{max-width:360px;border:1px solid #ccd}
figcaption{font-size:12px;color:#667}section.image{background:#fff;margin:18px 0;padding:14px 18px;border-radius:8px;box-shadow:0 1px 2px #0002}
.problems{color:#a35400}code{background:#eef1f4;padding:1px 4px;border-radius:3px}
"""

_JS = """
document.querySelectorAll('th[data-col]').forEach(function(th){
  th.addEventListener('click',function(){
    var table=th.closest('table'),body=table.tBodies[0],col=+th.dataset.col;
    var asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[col].dataset.v||a.cells[col].textContent,y=b.cells[col].dataset.v||b.cells[col].textContent;
      var nx=parseFloat(x),ny=parseFloat(y);
      var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
    rows.forEach(function(r){body.appendChild(r);});
  });
});
"""


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return f"<div>(no {html.escape(alt)} preview)</div>"
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def render_report(manifest: dict[str, Any], thumbs: dict[int, dict[str, bytes]]) -> str:
    """Render the run's report.

    Args:
        manifest: the run manifest (see ``delivery.build_manifest``).
        thumbs: per image index, JPEG bytes of the "before" and "after" thumbnails.
    """
    s = manifest["summary"]
    recipe = manifest["recipe"]
    rows, sections = [], []
    for img in manifest["images"]:
        scores = img.get("scores") or {}
        status = img["status"]
        cls = "failed" if status == "failed" else "ok"
        size_in = (
            f"{img['input'].get('width', '?')}×{img['input'].get('height', '?')}"
            if img.get("input")
            else ""
        )
        size_out = (
            f"{img['output'].get('width', '?')}×{img['output'].get('height', '?')}"
            if img.get("output")
            else ""
        )
        rows.append(
            "<tr>"
            f'<td data-v="{img["index"]}">{img["index"]}</td>'
            f'<td><a href="#img-{img["index"]}">{html.escape(img["name"])}</a></td>'
            f'<td class="{cls}">{html.escape(status)}</td>'
            f'<td data-v="{scores.get("score", -1)}">{_fmt(scores.get("score"))}</td>'
            f"<td>{_fmt(scores.get('verdict'))}</td>"
            f"<td>{size_in}</td><td>{size_out}</td>"
            f"<td>{html.escape(img.get('output_name') or '')}</td>"
            f"<td>{html.escape(img.get('reason') or '; '.join(img.get('problems') or []))}</td>"
            "</tr>"
        )
        if status != "failed":
            pair = thumbs.get(img["index"], {})
            comps = {k: v for k, v in scores.items() if k not in ("score", "verdict")}
            problems = "".join(f"<li>{html.escape(p)}</li>" for p in img.get("problems") or [])
            sections.append(
                f'<section class="image" id="img-{img["index"]}"><h3>{html.escape(img["name"])}</h3>'
                f'<div class="pair"><figure>{_img(pair.get("before"), "before")}<figcaption>before · {size_in}</figcaption></figure>'
                f"<figure>{_img(pair.get('after'), 'after')}<figcaption>after · {size_out}</figcaption></figure></div>"
                f"<p>score <b>{_fmt(scores.get('score'))}</b> ({_fmt(scores.get('verdict'))})"
                f"{' · reused from an earlier run' if img.get('reused') else ''}</p>"
                f"<details><summary>score components</summary><code>{html.escape(json.dumps(comps))}</code></details>"
                + (f'<ul class="problems">{problems}</ul>' if problems else "")
                + "</section>"
            )
    skipped = "".join(
        f"<li><code>{html.escape(x.get('uri', ''))}</code>: {html.escape(x.get('reason', ''))}</li>"
        for x in manifest.get("skipped", [])
    )
    steps = " → ".join(html.escape(st["op"]) for st in recipe.get("steps", [])) or "(no steps)"
    head = ["#", "image", "status", "score", "verdict", "input", "output", "file", "notes"]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>retouch report {html.escape(manifest['run_id'])}</title>"
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head><body>'
        f"<header><h1>retouch report: {html.escape(recipe.get('name', ''))}</h1>"
        f"<p>run {html.escape(manifest['run_id'])} · {html.escape(manifest['created'])} · "
        f"source <code>{html.escape(manifest['source'])}</code> · steps {steps}</p></header><main>"
        '<div class="cards">'
        f'<div class="card"><b>{s["total"]}</b>images</div>'
        f'<div class="card ok"><b>{s["succeeded"]}</b>succeeded</div>'
        f'<div class="card failed"><b>{s["failed"]}</b>failed</div>'
        f'<div class="card"><b>{s["reused"]}</b>reused</div>'
        f'<div class="card"><b>{s["skipped"]}</b>skipped files</div></div>'
        "<table><thead><tr>"
        + "".join(f'<th data-col="{i}">{h}</th>' for i, h in enumerate(head))
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + (f"<h2>Skipped files</h2><ul>{skipped}</ul>" if skipped else "")
        + "".join(sections)
        + f"</main><script>{_JS}</script></body></html>"
    )
