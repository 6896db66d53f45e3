"""The review report: one self-contained HTML file (no CDN, images inlined), readable offline.

Per image it shows the before/after comparison three ways (a draggable slider, side by side,
and a 100% crop of the most detailed region), the score with its components and verdict,
the problems with what to change, hints, and the image's other versions side by side. A
video also gets a slider per sampled moment and a short before/after clip (an embedded
MP4 that plays in the page).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from typing import Any, TextIO

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f5f6f8}
header{background:#1d232a;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:20px}
header p{margin:0;color:#c4ccd6}main{padding:20px 28px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:110px;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:22px}.ok,.improved{color:#12805c}.failed,.worse{color:#c0392b}.unchanged{color:#667}.restyled{color:#6a4c93}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:6px 10px;border-bottom:1px solid #e5e8ec;text-align:left;vertical-align:top}
th{cursor:pointer;background:#eef1f4;user-select:none;white-space:nowrap}th:after{content:" \\2195";color:#99a}
th[data-dir=asc]:after{content:" \\2191"}th[data-dir=desc]:after{content:" \\2193"}
section.image{background:#fff;margin:18px 0;padding:14px 18px;border-radius:8px;box-shadow:0 1px 2px #0002}
.modes button{border:1px solid #ccd;background:#fff;padding:3px 10px;border-radius:4px;cursor:pointer;margin-right:4px}
.modes button.on{background:#1d232a;color:#fff}
.view{display:none;margin-top:10px}.mode-slider .v-slider,.mode-side .v-side,.mode-zoom .v-zoom{display:block}
.compare{position:relative;display:inline-block;cursor:ew-resize;touch-action:none;user-select:none;max-width:100%}
.compare img{display:block;max-width:min(640px,100%);-webkit-user-drag:none}
.compare .before-layer{position:absolute;inset:0;width:100%;height:100%;object-fit:fill;max-width:none}
.compare .handle{position:absolute;top:0;bottom:0;width:2px;background:#fff;box-shadow:0 0 3px #000a;pointer-events:none}
.compare .tag{position:absolute;top:6px;font-size:11px;background:#000a;color:#fff;padding:1px 6px;border-radius:3px}
.v-slider input{display:block;width:min(640px,100%);margin-top:6px}
.moments{display:flex;flex-wrap:wrap;gap:12px}.moment{margin:0;width:min(420px,100%)}.moment input{display:block;width:100%}
.pair{display:flex;gap:10px;flex-wrap:wrap}.pair figure{margin:0}.pair img{max-width:420px;border:1px solid #ccd}
.v-zoom img{max-width:none;image-rendering:auto;border:1px solid #ccd}
figcaption{font-size:12px;color:#667}.problems{color:#a35400}.hints{color:#35608f}
code{background:#eef1f4;padding:1px 4px;border-radius:3px}
.versions{display:flex;gap:10px;flex-wrap:wrap;margin-top:8px}.versions img{max-width:200px;border:1px solid #ccd}
.components td{padding:2px 8px;border:none}
.preview-clip{margin:0}.preview-clip video{display:block;max-width:min(640px,100%);height:auto;background:#000}
"""

_JS = """
(function(){
function num(x){var n=parseFloat(x);return isNaN(n)?null:n;}
document.querySelectorAll('th[data-col]').forEach(function(th){
  th.addEventListener('click',function(){
    var table=th.closest('table'),body=table.tBodies[0],col=+th.dataset.col;
    var asc=th.dataset.dir!=='asc';
    table.querySelectorAll('th').forEach(function(o){delete o.dataset.dir;});
    th.dataset.dir=asc?'asc':'desc';
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[col].dataset.v||a.cells[col].textContent,y=b.cells[col].dataset.v||b.cells[col].textContent;
      var nx=num(x),ny=num(y);
      var c=(nx!==null&&ny!==null)?nx-ny:x.localeCompare(y);return asc?c:-c;});
    rows.forEach(function(r){body.appendChild(r);});
  });
});
document.querySelectorAll('.compare').forEach(function(c){
  var top=c.querySelector('.before-layer'),handle=c.querySelector('.handle');
  var range=c.parentNode.querySelector('input[type=range]'),dragging=false;
  function set(p){
    p=Math.max(0,Math.min(100,p));
    top.style.clipPath='inset(0 '+(100-p)+'% 0 0)';
    handle.style.left='calc('+p+'% - 1px)';
    c.dataset.pos=p.toFixed(1);
    if(range){range.value=p;}
  }
  function move(e){var r=c.getBoundingClientRect();if(r.width>0){set(100*(e.clientX-r.left)/r.width);}}
  c.addEventListener('pointerdown',function(e){dragging=true;if(c.setPointerCapture){c.setPointerCapture(e.pointerId);}move(e);});
  c.addEventListener('pointermove',function(e){if(dragging){move(e);}});
  c.addEventListener('pointerup',function(){dragging=false;});
  c.addEventListener('pointercancel',function(){dragging=false;});
  if(range){range.addEventListener('input',function(){set(+range.value);});}
  set(50);
});
document.querySelectorAll('.modes button').forEach(function(b){
  b.addEventListener('click',function(){
    var sec=b.closest('section');
    sec.classList.remove('mode-slider','mode-side','mode-zoom');
    sec.classList.add('mode-'+b.dataset.mode);
    sec.querySelectorAll('.modes button').forEach(function(o){o.classList.toggle('on',o===b);});
  });
});
})();
"""


def _src(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def _img(data: bytes | None, alt: str, cls: str = "") -> str:
    if not data:
        return f'<div class="missing">(no {html.escape(alt)} preview)</div>'
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} alt="{html.escape(alt)}" src="{_src(data)}">'


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def _size(entry: dict[str, Any] | None) -> str:
    if not entry:
        return ""
    return f"{entry.get('width', '?')}×{entry.get('height', '?')}"


def _compare(views: dict[str, bytes], size_in: str, size_out: str) -> str:
    """The three comparison views of one image (slider, side by side, 100% crop)."""
    before, after = views.get("before"), views.get("after")
    if before and after:
        slider = (
            '<div class="compare">'
            f"{_img(after, 'after')}{_img(before, 'before', 'before-layer')}"
            '<span class="handle"></span>'
            '<span class="tag" style="left:6px">before</span>'
            '<span class="tag" style="right:6px">after</span></div>'
            '<input type="range" min="0" max="100" step="0.5" value="50" aria-label="before/after">'
        )
    else:
        slider = _img(after or before, "after")
    side = (
        f'<div class="pair"><figure>{_img(before, "before")}<figcaption>before · {size_in}</figcaption></figure>'
        f"<figure>{_img(after, 'after')}<figcaption>after · {size_out}</figcaption></figure></div>"
    )
    zoom = (
        '<div class="pair">'
        f"<figure>{_img(views.get('crop-before'), 'before at 100%')}"
        "<figcaption>before, enlarged to the result's size (plain interpolation)</figcaption></figure>"
        f"<figure>{_img(views.get('crop-after'), 'after at 100%')}"
        "<figcaption>after, 100% (most detailed region)</figcaption></figure></div>"
    )
    return (
        '<div class="modes"><button type="button" class="on" data-mode="slider">slider</button>'
        '<button type="button" data-mode="side">side by side</button>'
        '<button type="button" data-mode="zoom">100%</button></div>'
        f'<div class="view v-slider">{slider}</div><div class="view v-side">{side}</div>'
        f'<div class="view v-zoom">{zoom}</div>'
    )


def _moments(views: dict[str, bytes], frames: list[dict[str, Any]]) -> str:
    """A video's sampled moments: a before/after slider for each, with its time, score and
    frame-to-frame change (source → result)."""
    blocks = []
    for k, frame in enumerate(frames, start=1):
        before, after = views.get(f"moment-{k}-before"), views.get(f"moment-{k}-after")
        if not (before and after):
            continue
        change = ""
        if frame.get("change_before") is not None and frame.get("change_after") is not None:
            change = f" · change to the next frame {frame['change_before']:.1f} → {frame['change_after']:.1f}"
        blocks.append(
            '<figure class="moment"><div class="compare">'
            f"{_img(after, 'after')}{_img(before, 'before', 'before-layer')}"
            '<span class="handle"></span></div>'
            '<input type="range" min="0" max="100" step="0.5" value="50" '
            f'aria-label="before/after at {_fmt(frame.get("time"))} s">'
            f"<figcaption>at {_fmt(frame.get('time'))} s · score {_fmt(frame.get('score'))} "
            f"{html.escape(str(frame.get('verdict') or ''))}{change}</figcaption></figure>"
        )
    if not blocks:
        return ""
    return f'<h4>Moments of the clip</h4><div class="moments">{"".join(blocks)}</div>'


def _preview_clip(views: dict[str, bytes], clip: dict[str, Any] | None) -> str:
    """A video's short before/after clip (embedded MP4), labelled with its time span."""
    data = views.get("preview-clip")
    if not (data and clip):
        return ""
    source = "data:video/mp4;base64," + base64.b64encode(data).decode()
    stacked = clip.get("layout") == "stacked"
    sides = "Before (above) | After (below)" if stacked else "Before | After"
    return (
        '<h4>Preview clip</h4><figure class="preview-clip">'
        f'<video controls loop muted playsinline preload="metadata" src="{source}" '
        f'width="{int(clip.get("width") or 0)}" height="{int(clip.get("height") or 0)}"></video>'
        f"<figcaption>{sides} · {_fmt(clip.get('start'))}–{_fmt(clip.get('end'))} s"
        f" · {int(clip.get('frames') or 0)} frames</figcaption></figure>"
    )


def _versions(views: dict[str, bytes], entries: list[dict[str, Any]]) -> str:
    """Other versions of the image: thumbnails labelled ``version:<label>`` in ``views``,
    and/or version entries (label, score, verdict, run, time) from the manifest."""
    figures = []
    described = {str(e.get("label")): e for e in entries if e.get("label") is not None}
    labels = [k.split(":", 1)[1] for k in views if k.startswith("version:")]
    for label in dict.fromkeys(labels + list(described)):
        info = described.get(label, {})
        caption = " · ".join(
            x
            for x in (
                f"version {html.escape(label)}",
                f"score {_fmt(info.get('score'))}" if info.get("score") is not None else "",
                html.escape(str(info.get("verdict") or "")),
                html.escape(str(info.get("run_id") or "")),
                "current" if info.get("current") else "",
            )
            if x
        )
        figures.append(
            f"<figure>{_img(views.get('version:' + label), 'version ' + label)}"
            f"<figcaption>{caption}</figcaption></figure>"
        )
    if not figures:
        return ""
    return f'<h4>Versions</h4><div class="versions">{"".join(figures)}</div>'


def _version_entries(img: dict[str, Any]) -> list[dict[str, Any]]:
    """The version this run replaced and the new one, from the record's output."""
    output = img.get("output") or {}
    previous = output.get("previous")
    if not previous:
        return []
    old_scores = previous.get("scores") or {}
    new_scores = img.get("scores") or {}
    return [
        {
            "label": str(previous.get("version")),
            "score": old_scores.get("score"),
            "verdict": old_scores.get("verdict"),
            "run_id": previous.get("run_id"),
        },
        {
            "label": str(output.get("version")),
            "score": new_scores.get("score"),
            "verdict": new_scores.get("verdict"),
            "run_id": "this run",
            "current": True,
        },
    ]


def _components(scores: dict[str, Any]) -> str:
    comps = scores.get("components") or {}
    quality = scores.get("quality") or {}
    fidelity = scores.get("fidelity") or {}
    rows = [f"<tr><td>{html.escape(k)}</td><td>{v:+.2f}</td></tr>" for k, v in comps.items()]
    rows.insert(
        0,
        f"<tr><td>score before → after</td><td>{_fmt(scores.get('score_before'))} → "
        f"{_fmt(scores.get('score'))}</td></tr>",
    )
    rows.append(
        f"<tr><td>naturalness (NIQE) before → after</td><td>{_fmt(quality.get('before'))} → "
        f"{_fmt(quality.get('after'))}</td></tr>"
    )
    rows += [f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in fidelity.items()]
    rest = {k: v for k, v in scores.items() if k in ("before", "after")}
    return (
        f'<details><summary>score components</summary><table class="components">{"".join(rows)}</table>'
        f"<code>{html.escape(json.dumps(rest))}</code></details>"
    )


def render_report(manifest: dict[str, Any], thumbs: dict[int, dict[str, bytes]]) -> str:
    """The run's report as one string (see :func:`write_report`).

    Args:
        manifest: the run manifest (see ``delivery.build_manifest``); an image entry may carry
            ``versions`` (list of dicts with label, score, verdict, run_id, current).
        thumbs: per image index, JPEG bytes by view: "before", "after" (thumbnails),
            "crop-before", "crop-after" (100% crops), "version:<label>" (other versions),
            a video's "moment-<k>-before"/"after" and "preview-clip" (MP4 bytes).
    """
    out = io.StringIO()
    write_report(out, manifest, lambda index: thumbs.get(index, {}))
    return out.getvalue()


def write_report(
    out: TextIO, manifest: dict[str, Any], views_of: Callable[[int], dict[str, bytes]]
) -> None:
    """Write the run's report to ``out``, one image section at a time.

    ``views_of(index)`` returns an image's JPEG views (as ``thumbs`` of :func:`render_report`)
    when its section is written, so only one image's previews are in memory at once, however
    large the batch.
    """
    s = manifest["summary"]
    recipe = manifest["recipe"]
    rows = []
    verdicts: dict[str, int] = {}
    score_values = []
    for img in manifest["images"]:
        scores = img.get("scores") or {}
        status = img["status"]
        verdict = scores.get("verdict")
        if verdict:
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if scores.get("score") is not None:
            score_values.append(float(scores["score"]))
        cls = "failed" if status == "failed" else "ok"
        size_in, size_out = _size(img.get("input")), _size(img.get("output"))
        notes = img.get("reason") or "; ".join(img.get("problems") or [])
        rows.append(
            "<tr>"
            f'<td data-v="{img["index"]}">{img["index"]}</td>'
            f'<td><a href="#img-{img["index"]}">{html.escape(img["name"])}</a></td>'
            f'<td class="{cls}">{html.escape(status)}</td>'
            f'<td data-v="{scores.get("score", -1)}">{_fmt(scores.get("score"))}</td>'
            f'<td class="{html.escape(str(verdict or ""))}">{_fmt(verdict)}</td>'
            f'<td data-v="{scores.get("gain", -999)}">{_fmt(scores.get("gain"))}</td>'
            f"<td>{size_in}</td><td>{size_out}</td>"
            f"<td>{html.escape(img.get('output_name') or '')}</td>"
            f"<td>{html.escape(notes)}</td>"
            "</tr>"
        )
    skipped = "".join(
        f"<li><code>{html.escape(x.get('uri', ''))}</code>: {html.escape(x.get('reason', ''))}</li>"
        for x in manifest.get("skipped", [])
    )
    steps = " → ".join(html.escape(st["op"]) for st in recipe.get("steps", [])) or "(no steps)"
    head = ["#", "image", "status", "score", "verdict", "gain", "input", "output", "file", "notes"]
    mean = f"{sum(score_values) / len(score_values):.1f}" if score_values else "–"
    out.write(
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
        f'<div class="card"><b>{s.get("reused", 0)}</b>reused</div>'
        f'<div class="card"><b>{s.get("skipped", 0)}</b>skipped files</div>'
        f'<div class="card"><b>{mean}</b>mean score</div>'
        + "".join(
            f'<div class="card {v}"><b>{verdicts.get(v, 0)}</b>{v}</div>'
            for v in ("improved", "unchanged", "restyled", "worse")
            if v != "restyled" or verdicts.get(v)
        )
        + '</div><table id="images"><thead><tr>'
        + "".join(f'<th data-col="{i}">{h}</th>' for i, h in enumerate(head))
        + "</tr></thead><tbody>"
    )
    out.writelines(rows)
    out.write("</tbody></table>")
    if skipped:
        out.write(f"<h2>Skipped files</h2><ul>{skipped}</ul>")
    for img in manifest["images"]:
        if img["status"] == "failed":
            continue
        scores = img.get("scores") or {}
        verdict = scores.get("verdict")
        size_in, size_out = _size(img.get("input")), _size(img.get("output"))
        views = views_of(img["index"])
        problems = "".join(f"<li>{html.escape(p)}</li>" for p in img.get("problems") or [])
        hints = "".join(f"<li>{html.escape(h)}</li>" for h in scores.get("hints") or [])
        out.write(
            f'<section class="image mode-slider" id="img-{img["index"]}">'
            f"<h3>{html.escape(img['name'])}</h3>"
            f"<p>score {_fmt(scores.get('score_before'))} → <b>{_fmt(scores.get('score'))}</b> "
            f'<span class="{html.escape(str(verdict or ""))}">{_fmt(verdict)}</span>'
            f"{' · reused from an earlier run' if img.get('reused') else ''}"
            f" · {size_in} → {size_out}</p>"
            + _compare(views, size_in, size_out)
            + (f'<ul class="problems">{problems}</ul>' if problems else "")
            + (f'<ul class="hints">{hints}</ul>' if hints else "")
            + _components(scores)
            + _moments(views, scores.get("frames") or [])
            + _preview_clip(views, scores.get("preview_clip"))
            + _versions(views, img.get("versions") or _version_entries(img))
            + "</section>"
        )
    out.write(f"</main><script>{_JS}</script></body></html>")
