"""The results report: one static HTML page (``results/report/index.html``) built from the pipeline's outputs.

It shows every table as the tables step wrote it (our numbers, the papers' beside them, and where each number
came from: trained here, a released run, or what it would cost), the data summaries, the training curves and
decomposition figures, audio players for the WAV examples (input, each slot or source, the reconstruction), the
released runs, and what was not computed here with its cost. Files are linked, not copied (paths relative to the
page), so the page opens from disk without a server as long as ``results/`` stays together.

A small script on the page counts, once everything has loaded, the tables, the images that decoded and the audio
elements whose metadata loaded, and writes the counts on ``<body>`` (``data-tables``, ``data-images``,
``data-audio``): the test renders the page in headless Chromium and reads them.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import time
from pathlib import Path

from musicdecomp.compute import NOT_TRAINED, label, manifest, minutes
from musicdecomp.io import write_text
from musicdecomp.logs import get_logger

log = get_logger("report")

TABLES = {  # section -> the tables' Markdown files (results/tables/), in the order shown
    "musicslots": ("table1_musicslots", "table2_probes"),
    "codec": ("codec",),
    "composable": ("composable_separation", "composable_operators", "composable_generation", "composable_diversity"),
}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:13px} th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3} tr:nth-child(even) td{background:#fafafa} td.missing{color:#a33}
.meta{color:#555} .gallery{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;max-width:560px}
figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:12px;color:#555}
.audio{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:6px 16px;margin:.4em 0 1em}
.audio div{font-size:12px} audio{width:100%;height:32px} details{margin:.4em 0} summary{cursor:pointer}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
"""

CHECK = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var auds = Array.prototype.slice.call(document.querySelectorAll('audio'));
  var pending = auds.length, finished = false;
  function done() {
    if (finished) return; finished = true;
    var b = document.body.dataset;
    b.tables = document.querySelectorAll('table').length;
    b.images = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length + '/' + imgs.length;
    b.audio = auds.filter(function (a) { return a.readyState >= 1; }).length + '/' + auds.length;
    b.checked = '1';
  }
  function one() { pending -= 1; if (pending <= 0) done(); }
  auds.forEach(function (a) {
    if (a.readyState >= 1) { one(); return; }
    a.addEventListener('loadedmetadata', one); a.addEventListener('error', one); a.load();
  });
  if (pending <= 0) done();
  setTimeout(done, 8000);
});
"""


def _e(text) -> str:
    return html.escape(str(text))


def _rel(path: Path, page_dir: Path) -> str:
    return os.path.relpath(path, page_dir).replace(os.sep, "/")


def markdown_table(text: str) -> str:
    """HTML of a Markdown file as the tables steps write it: a caption, pipe tables, notes and bullet lists."""
    out, rows, bullets = [], [], []

    def flush():
        if rows:
            head, body = rows[0], rows[1:]
            cells = "".join(f"<th>{_e(c)}</th>" for c in head)
            trs = "".join("<tr>" + "".join(
                f"<td class=missing>{_e(c)}</td>" if c.startswith(("not trained here", "not computed here"))
                else f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{trs}</tbody></table>")
            rows.clear()
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_e(b)}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            rows.append(cells)
            continue
        if s.startswith("- "):
            bullets.append(s[2:])
            continue
        flush()
        if s:
            out.append(f"<p>{_e(s)}</p>")
    flush()
    return "\n".join(out)


def _figure(path: Path, page_dir: Path, caption: str) -> str:
    return (f'<figure><img src="{_e(_rel(path, page_dir))}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _audio(folder: Path, page_dir: Path, limit: int, pattern: str = "*.wav") -> str:
    wavs = sorted(folder.rglob(pattern))[:limit]
    if not wavs:
        return ""
    items = "".join(f'<div>{_e(w.relative_to(folder).with_suffix(""))}<audio controls preload="metadata" '
                    f'src="{_e(_rel(w, page_dir))}"></audio></div>' for w in wavs)
    return f'<div class="audio">{items}</div>'


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def not_computed(results: Path) -> list[dict]:
    """Every GPU-scale job recorded as not trained here (its record), once each."""
    from musicdecomp.compute import record_in

    found: dict[tuple[str, str], dict] = {}
    candidates = [p for p in results.rglob("*.json") if p.name in ("train.json", "codec.json")]
    candidates += sorted(results.glob("codec/codes/*.pt"))
    for p in sorted(candidates):
        rec = record_in(p)
        if rec is not None and rec.get("job"):
            found.setdefault((rec["step"], rec["run"]), rec)
    return list(found.values())


def _runs(results: Path, pattern: str) -> list[Path]:
    """Run folders under ``results`` that trained or were released (not not-trained records)."""
    out = []
    for summary in sorted(results.glob(pattern)):
        d = _read(summary)
        if d is not None and NOT_TRAINED not in d:
            out.append(summary.parent)
    return out


def _data_summary(results: Path) -> str:
    rows = []
    for s in sorted(results.glob("data/*/summary.json")):
        d = _read(s) or {}
        if "splits" in d and "examples" in d:
            rows.append([s.parent.name, *(d["examples"].get(k, "") for k in ("train", "valid", "test")),
                         "x".join(map(str, d.get("shapes", {}).get("chord_db", []))), d.get("source_id", "")])
    stems = _read(results / "stems/jsb/summary.json")
    out = ""
    if rows:
        out += ("<table><thead><tr><th>dataset</th><th>train</th><th>valid</th><th>test</th><th>chord spectrogram</th>"
                "<th>data id</th></tr></thead><tbody>" + "".join(
                    "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")
    if stems:
        srows = [[split, v.get("renders", ""), v.get("rendered_hours", ""),
                  ", ".join(f"{k} {n}" for k, n in (v.get("chunks") or {}).items())]
                 for split, v in stems.get("splits", {}).items()]
        out += ("<p>Multi-stem audio rendered from the chorales (" + _e(", ".join(stems.get("classes", []))) + ", "
                + _e(stems.get("sample_rate", "")) + " Hz):</p><table><thead><tr><th>split</th><th>renders</th>"
                "<th>hours</th><th>7-s chunks per subset</th></tr></thead><tbody>" + "".join(
                    "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in srows) + "</tbody></table>")
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_report(cfg: dict, results: str | Path, out: str | Path) -> dict:
    """Write the report page ``out`` from the outputs under ``results``; returns what it shows (counts)."""
    results, out = Path(results), Path(out)
    page = out.parent
    page.mkdir(parents=True, exist_ok=True)
    n_fig, n_audio = cfg["figure_runs"], cfg["audio_runs"]
    body, toc = [], []

    def section(key: str, title: str, parts: list[str]) -> None:
        toc.append(f'<a href="#{key}">{_e(title)}</a>')
        body.append(f'<h2 id="{key}">{_e(title)}</h2>' + "\n".join(p for p in parts if p))

    def tables(names) -> list[str]:
        parts = []
        for name in names:
            md = results / "tables" / f"{name}.md"
            if md.is_file():
                parts.append(f'<div class="table" id="table-{name}">{markdown_table(md.read_text())}'
                             f'<p class=meta>results/tables/{_e(name)}.md (also .csv, .tex)</p></div>')
        return parts

    missing = not_computed(results)
    total = sum(r.get("own_gpu_minutes", r.get("gpu_minutes", 0)) for r in missing)
    status = ("Every GPU-scale job of these parameters was trained here or came from a released run."
              if not missing else
              f"{len(missing)} GPU-scale job(s) were not trained here: {minutes(total)} in all (estimates from "
              f"benchmarks/costs.yaml). Their table rows say so; run `all` on a GPU machine or through the SLURM "
              f"profile to fill them, or add released runs (releases/).")
    section("status", "What this report holds", [
        f'<p class="note">{_e(status)}</p>',
        ("<details><summary>not trained here, one line each</summary><table><thead><tr><th>job</th><th>step</th>"
         "<th>cost</th></tr></thead><tbody>" + "".join(
             f"<tr><td>{_e(r['run'])}</td><td>{_e(r['step'])}</td><td class=missing>{_e(label(r))}</td></tr>"
             for r in missing) + "</tbody></table></details>") if missing else ""])

    released = manifest()
    section("releases", "Released runs", [
        "<p>Runs trained on a GPU with params.yaml's protocol and shipped in releases/; where one matches the "
        "parameters, data and code version the pipeline gives a run, it is used instead of training.</p>",
        ("<table><thead><tr><th>run</th><th>step</th><th>steps</th><th>device</th><th>date</th><th>commit</th>"
         "<th>metrics</th></tr></thead><tbody>" + "".join(
             f"<tr><td>{_e(e['run'])}</td><td>{_e(e['step'])}</td><td>{_e(e.get('steps'))}</td>"
             f"<td>{_e(e.get('device'))}</td><td>{_e(e.get('date'))}</td><td>{_e(e.get('commit'))}</td>"
             f"<td>{_e(', '.join(f'{k} {v:.4g}' for k, v in (e.get('metrics') or {}).items()))}</td></tr>"
             for e in released) + "</tbody></table>") if released else "<p>None yet.</p>"])

    data_figs = [_figure(p, page, f"{p.parent.name}: test chords, their notes and masks")
                 for p in sorted(results.glob("data/*/examples.png"))]
    stems = _audio(results / "stems/jsb/test", page, n_audio, "*.flac")
    section("data", "Data", [_data_summary(results), f'<div class="gallery">{"".join(data_figs)}</div>',
                             "<h3>Listen: rendered stems (test split; drums, bass and piano on their own channels, "
                             "played mixed)</h3>" + stems if stems else ""])

    ms_runs = _runs(results, "musicslots/*/*/seed*/train.json")
    figs, audio = [], []
    for run in ms_runs[:n_fig]:
        name = "/".join(run.parts[-3:])
        for f, what in (("test_examples.png", "decomposition of test chords"), ("curves.png", "training curves")):
            if (run / f).is_file():
                figs.append(_figure(run / f, page, f"{name}: {what}"))
    for run in ms_runs[:n_audio]:
        if (a := _audio(run / "test_audio", page, 24)):
            audio.append(f"<details open><summary>{_e('/'.join(run.parts[-3:]))}: chords, slots and the "
                         f"matched notes</summary>{a}</details>")
    base_figs = [_figure(r / "curves.png", page, f"{'/'.join(r.parts[-3:])}: training curves")
                 for r in _runs(results, "baselines/*/*/seed*/train.json")[:n_fig] if (r / "curves.png").is_file()]
    section("musicslots", "MusicSlots: Tables 1 and 2", tables(TABLES["musicslots"]) + [
        f'<h3>Decompositions and training curves</h3><div class="gallery">{"".join(figs)}</div>' if figs else "",
        "<h3>Listen</h3>" + "".join(audio) if audio else "",
        f'<h3>Baselines: training curves</h3><div class="gallery">{"".join(base_figs)}</div>' if base_figs else ""])

    codec_parts = tables(TABLES["codec"])
    if (results / "codec/eval/examples.png").is_file():
        codec_parts.append(_figure(results / "codec/eval/examples.png", page, "codec: original and reconstruction"))
    if (a := _audio(results / "codec/eval/audio", page, 12)):
        codec_parts.append("<h3>Listen: original and decoded</h3>" + a)
    section("codec", "Codec", codec_parts)

    comp_parts = tables(TABLES["composable"])
    comp_figs = [_figure(p, page, p.stem.replace("_", " ")) for p in sorted(results.glob("figures/composable/*.png"))]
    comp_runs = _runs(results, "composable/*/*/seed*/train.json")
    comp_figs += [_figure(r / f, page, f"{'/'.join(r.parts[-3:])}: {f.removesuffix('.png')}")
                  for r in comp_runs[:n_fig] for f in ("separation.png", "generation.png", "curves.png")
                  if (r / f).is_file()]
    if comp_figs:
        comp_parts.append(f'<h3>Figures</h3><div class="gallery">{"".join(comp_figs)}</div>')
    listen = []
    for folder in sorted(results.glob("composable/*/baselines/examples"))[:n_audio]:
        if (a := _audio(folder, page, 24)):
            listen.append(f"<details><summary>{_e(folder.parts[-3])}: classic baselines</summary>{a}</details>")
    for run in comp_runs[:n_audio * 4]:
        if (a := _audio(run / "examples", page, 24)):
            listen.append(f"<details open><summary>{_e('/'.join(run.parts[-3:]))}: mixture, true stems, "
                          f"estimates, reconstruction or generations</summary>{a}</details>")
    if listen:
        comp_parts.append("<h3>Listen</h3>" + "".join(listen))
    section("composable", "Composable representations: Tables 2-5", comp_parts)

    when = time.strftime("%Y-%m-%d %H:%M")
    doc = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>musicdecomp results</title>"
           f"<style>{CSS}</style><script>{CHECK}</script></head><body>"
           f"<h1>musicdecomp results</h1><p class=meta>built {when} from results/ at commit {_e(_commit())}; "
           f"every number below is read from the pipeline's outputs</p><p>{' · '.join(toc)}</p>"
           + "\n".join(body) + "</body></html>")
    write_text(out, doc)
    counts = {"tables": doc.count("<table"), "images": doc.count("<img "), "audio": doc.count("<audio "),
              "not_trained": len(missing)}
    log.info("report: %s (%d tables, %d figures, %d audio players; %d jobs not trained here)", out,
             counts["tables"], counts["images"], counts["audio"], counts["not_trained"])
    return counts
