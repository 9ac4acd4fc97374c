"""The composable-representations tables and figures, generated from the separation evaluations.

* ``composable_separation.{csv,md,tex}`` (the paper's Table 2): per subset, every method's SI-SDR, SI-SIR and SI-SAR
  (mean and std over chunks, seeds pooled) against the raw stems and against the codec-decoded stems, from the
  mixture itself (the lower bound) through the classic separators and the models to the oracle ideal ratio mask,
  with the paper's Slakh2100 numbers beside them, labelled as measured on other data.
* ``composable_operators.{csv,md,tex}`` (the paper's Table 3): per subset and composition operator, the latent MSE
  of the reconstructed mixture (per element, and summed over the crop as the paper's code logs it) and its MS-STFT
  distance to the decoded input, with the paper's Table 3 beside it.
* ``composable_generation.{csv,md,tex}`` and ``composable_diversity.{csv,md,tex}`` (the paper's Tables 4-5), from the
  prior's generation evaluations (``generation_tables``): FAD of unconditional generations and variations against
  the test audio and its reconstruction, with the codec's own FAD as the ceiling; the variations' latent MSE and
  MS-STFT against the true and a random stem.
* ``figures/separation_<subset>.png``: the first example chunk as every method separates it (spectrograms);
  ``figures/si_sdr_vs_loudness_<subset>.png``: SI-SDR per chunk against the loudness ratio of the sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicdecomp.compute import NOT_TRAINED, label, record_in
from musicdecomp.errors import UserError
from musicdecomp.eval.separation import log_spectrogram
from musicdecomp.eval.tables import paper_numbers
from musicdecomp.io import atomic_path, read_json, write_text
from musicdecomp.metrics.separation import METRICS
from musicdecomp.sweep import composable_dir, prior_dir

ORDER = ["mixture", "rpca", "repet_sim", "ft2d", "nmf", "hpss", "mean", "sum", "min", "max", "supervised",
         "oracle_irm"]
LABELS = {"mixture": "mixture as every source (lower bound)", "rpca": "rPCA", "repet_sim": "REPET-SIM",
          "ft2d": "FT2D", "nmf": "NMF", "hpss": "HPSS", "mean": "ours, mean operator", "sum": "ours, sum operator",
          "min": "ours, min operator", "max": "ours, max operator",
          "supervised": "supervised (same U-Net, true stems)", "oracle_irm": "oracle ideal ratio mask (upper bound)"}
REFERENCES = {"raw": "raw stems", "decoded": "codec-decoded stems"}


def _pooled(results: list[dict], ref: str) -> dict[str, np.ndarray]:
    """Per metric, every chunk's and source's value of ``ref`` over the runs (seeds) of one method."""
    return {m: np.concatenate([np.asarray(r["per_chunk"][ref][m], dtype=float).ravel() for r in results])
            for m in METRICS}


def _stat(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    return (float(finite.mean()), float(finite.std())) if len(finite) else (float("nan"), float("nan"))


def collect(runs: list[list], subsets: list[str]) -> dict[str, dict[str, list[dict]]]:
    """{subset: {method: [evaluation per seed]}} from every run's and every subset's baseline evaluation, after
    checking that all of a subset's methods were scored on the same chunks."""
    out: dict[str, dict[str, list[dict]]] = {s: {} for s in subsets}
    chunks: dict[str, list] = {}
    for subset in subsets:
        path = Path(f"results/composable/{subset}/baselines/separation.json")
        base = read_json(path, "run the eval_bss_baselines step")
        chunks[subset] = base["chunks"]
        for name, res in base["methods"].items():
            out[subset].setdefault(name, []).append(res)
    for subset, variant, seed in runs:
        path = Path(composable_dir(subset, variant, seed)) / "separation.json"
        res = read_json(path, "run the eval_composable step")
        if res["chunks"] != chunks[subset]:
            raise UserError(f"{path} was scored on other test chunks than {subset}'s baselines (another "
                            f"composable.eval.max_chunks or seed); rerun its evaluation")
        out[subset].setdefault(variant, []).append(res)
    return out


def separation_rows(results: dict) -> list[dict]:
    rows = []
    for subset, methods in results.items():
        for name in sorted(methods, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
            row = {"subset": subset, "method": name, "label": LABELS.get(name, name), "seeds": len(methods[name]),
                   "chunks": len(np.asarray(methods[name][0]["per_chunk"]["raw"]["si_sdr"]))}
            for ref in REFERENCES:
                pooled = _pooled(methods[name], ref)
                for m in METRICS:
                    row[f"{ref}_{m}_mean"], row[f"{ref}_{m}_std"] = _stat(pooled[m])
            rows.append(row)
    return rows


def operator_rows(results: dict) -> list[dict]:
    rows = []
    for subset, methods in results.items():
        for name in [m for m in ORDER if m in methods and "reconstruction" in methods[m][0]]:
            row = {"subset": subset, "operator": name, "seeds": len(methods[name])}
            for key in ("latent_mse", "latent_sse", "ms_stft", "ms_stft_raw"):
                values = np.concatenate([np.asarray(r["per_chunk"]["reconstruction"][key], dtype=float)
                                         for r in methods[name]])
                row[f"{key}_mean"], row[f"{key}_std"] = _stat(values)
            rows.append(row)
    return rows


def note_missing(md: Path, missing: list[tuple[str, dict]]) -> None:
    """Add to a Markdown table what was not computed here, and what it would cost."""
    if missing:
        lines = [f"- {what}: {label(rec)}" for what, rec in missing]
        write_text(md, md.read_text() + "\nNot computed here (docs/front_door.md):\n\n" + "\n".join(lines) + "\n")


def _cell(mean: float, std: float, digits: int = 1) -> str:
    return "n/a" if not np.isfinite(mean) else f"{mean:.{digits}f} ({std:.{digits}f})"


def write_separation(rows: list[dict], paper: dict, out_csv, out_md, out_tex) -> None:
    keys = ["subset", "method", "seeds", "chunks"] + [f"{ref}_{m}_{s}" for ref in REFERENCES for m in METRICS
                                                     for s in ("mean", "std")] + ["paper_method", "paper_si_sdr",
                                                                                  "paper_si_sir", "paper_si_sar"]
    table2 = paper["table2"]
    csv, md, tex = [",".join(keys)], [], []
    md += ["| subset | method | seeds | chunks | SI-SDR ↑ | SI-SIR ↑ | SI-SAR ↑ | SI-SDR ↑ (decoded) | SI-SIR ↑ "
           "(decoded) | SI-SAR ↑ (decoded) | paper, Slakh2100: method | SI-SDR | SI-SIR | SI-SAR |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = table2["rows"].get(r["method"])
        pvals = [p["method"], *(p[m] for m in METRICS)] if p else ["", "", "", ""]
        csv.append(",".join(str(r.get(k, "")) for k in keys[:-4]) + "," + ",".join(
            str(v[0] if isinstance(v, list) else v) for v in pvals))
        cells = [_cell(r[f"{ref}_{m}_mean"], r[f"{ref}_{m}_std"]) for ref in REFERENCES for m in METRICS]
        pcells = [pvals[0]] + [f"{v[0]} ({v[1]})" if isinstance(v, list) else "" for v in pvals[1:]]
        md.append(f"| {r['subset']} | {r['label']} | {r['seeds']} | {r['chunks']} | " + " | ".join(cells) + " | "
                  + " | ".join(pcells) + " |")
        tex.append(" & ".join([r["subset"].replace("_", "\\_"), r["label"].replace("_", "\\_")]
                              + [f"${c}$".replace("(", "\\,(") if c != "n/a" else c for c in cells[:3]]) + " \\\\")
    md += ["", f"dB, mean (std) over chunks and sources, seeds pooled; sources matched to the stems by the best "
               f"permutation per chunk. The paper's numbers: {paper['paper']}, {paper['source']}; "
               f"{paper['caveat']}."]
    write_text(out_csv, "\n".join(csv) + "\n")
    write_text(out_md, "\n".join(md) + "\n")
    write_text(out_tex, _tex("Blind source separation on the test chunks (SI metrics in dB against the raw stems, "
                             "mean (std) over chunks).", "tab:composable-separation",
                             ["subset", "method", "SI-SDR", "SI-SIR", "SI-SAR"], tex))


def write_operators(rows: list[dict], paper: dict, out_csv, out_md, out_tex) -> None:
    table3 = paper["table3"]
    keys = ["subset", "operator", "seeds"] + [f"{k}_{s}" for k in ("latent_mse", "latent_sse", "ms_stft",
                                                                    "ms_stft_raw") for s in ("mean", "std")]
    keys += ["paper_mse_x1e4", "paper_ms_stft"]
    csv = [",".join(keys)]
    md = ["| subset | operator | seeds | latent MSE ↓ (per element) | latent squared error ↓ (summed) | MS-STFT ↓ "
          "(vs decoded input) | MS-STFT ↓ (vs raw mixture) | paper: MSE ×10⁴ | paper: MS-STFT |",
          "|---|---|---|---|---|---|---|---|---|"]
    tex = []
    for r in rows:
        p = table3["rows"].get(r["operator"], {})
        csv.append(",".join(str(r[k]) for k in keys[:-2]) + f",{p.get('mse', [''])[0]},{p.get('ms_stft', [''])[0]}")
        cells = [_cell(r["latent_mse_mean"], r["latent_mse_std"], 4), _cell(r["latent_sse_mean"], r["latent_sse_std"], 0),
                 _cell(r["ms_stft_mean"], r["ms_stft_std"], 2), _cell(r["ms_stft_raw_mean"], r["ms_stft_raw_std"], 2)]
        pm = f"{p['mse'][0]} ({p['mse'][1]})" if p else ""
        ps = f"{p['ms_stft'][0]} ({p['ms_stft'][1]})" if p else ""
        md.append(f"| {r['subset']} | {r['operator']} | {r['seeds']} | " + " | ".join(cells) + f" | {pm} | {ps} |")
        tex.append(" & ".join([r["subset"].replace("_", "\\_"), r["operator"], f"${cells[0]}$", f"${cells[2]}$"])
                   + " \\\\")
    md += ["", f"Mean (std) over chunks, seeds pooled. The paper's numbers: {paper['paper']}, {paper['source']}; "
               f"{paper['caveat']}."]
    write_text(out_csv, "\n".join(csv) + "\n")
    write_text(out_md, "\n".join(md) + "\n")
    write_text(out_tex, _tex("Reconstruction of the mixture by composition operator (mean (std) over chunks).",
                             "tab:composable-operators", ["subset", "operator", "latent MSE", "MS-STFT"], tex))


def _tex(caption: str, label: str, header: list[str], body: list[str]) -> str:
    lines = ["% generated by musicdecomp (src/musicdecomp/eval/composable_tables.py); needs \\usepackage{booktabs}",
             "\\begin{table}[t]", "\\centering", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{'l' * 2 + 'r' * (len(header) - 2)}}}", "\\toprule", " & ".join(header) + " \\\\",
             "\\midrule", *body, "\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _read_wav(path: Path) -> np.ndarray | None:
    import soundfile as sf

    return sf.read(path, dtype="float32")[0] if path.is_file() else None


def plot_separation(subset: str, classes: list[str], methods: list[str], runs: list[list], out_png) -> None:
    """The first example chunk: a row per method (its mixture, then its estimate of each source), the true stems
    on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folders = {m: Path(f"results/composable/{subset}/baselines/examples/{m}") for m in methods}
    for s, v, seed in sorted(runs, key=lambda r: r[2], reverse=True):  # each variant's first seed
        if s == subset:
            folders[v] = Path(composable_dir(s, v, seed)) / "examples"
    order = [m for m in ORDER if m in folders] + [m for m in folders if m not in ORDER]
    first = folders[order[0]]
    rows = [("true stems", [_read_wav(first / "ex0_mixture.wav")] + [_read_wav(first / f"ex0_{c}_true.wav")
                                                                     for c in classes])]
    rows += [(LABELS.get(m, m), [None] + [_read_wav(folders[m] / f"ex0_{c}_estimate.wav") for c in classes])
             for m in order]
    fig, axes = plt.subplots(len(rows), 1 + len(classes), figsize=(2.8 * (1 + len(classes)), 1.6 * len(rows)),
                             squeeze=False)
    for r, (name, signals) in enumerate(rows):
        for c, x in enumerate(signals):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if x is not None:
                ax.imshow(log_spectrogram(x), origin="lower", aspect="auto", vmin=-80, vmax=20, cmap="magma")
            if r == 0:
                ax.set_title(["mixture", *classes][c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(f"{subset}: the first test example, separated by every method", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def plot_loudness(subset: str, methods: dict[str, list[dict]], loudness: list, out_png) -> None:
    """SI-SDR per chunk (mean over sources) against the level difference of the first two sources (dB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio = np.asarray([row[0] - row[-1] for row in loudness])
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in [m for m in ORDER if m in methods]:
        sdr = np.nanmean(np.asarray(methods[m][0]["per_chunk"]["raw"]["si_sdr"], dtype=float), axis=1)
        ax.scatter(ratio, sdr, s=8, label=LABELS.get(m, m), alpha=0.7)
    ax.set_xlabel("level of the first source minus the last (dB)")
    ax.set_ylabel("SI-SDR (dB, mean over sources)")
    ax.set_title(f"{subset}: separation against the sources' loudness ratio", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def composable_tables(cfg: dict, out_dir: str | Path, figures_dir: str | Path) -> dict:
    """Both tables and the figures, from the evaluations of ``cfg``'s runs and subsets."""
    missing, subsets, runs = [], [], []
    for subset in cfg["subsets"]:
        rec = record_in(f"results/composable/{subset}/baselines/separation.json")
        if rec is not None:
            missing.append((f"{subset}: classic baselines", rec))
        else:
            subsets.append(subset)
    for subset, variant, seed in cfg["runs"]:
        rec = record_in(Path(composable_dir(subset, variant, seed)) / "separation.json")
        if rec is not None:
            missing.append((f"{subset}: {variant}, seed {seed}", rec))
        elif subset in subsets:
            runs.append([subset, variant, seed])
    results = collect(runs, subsets)
    paper = paper_numbers("composable")
    out_dir, figures_dir = Path(out_dir), Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    sep, ops = separation_rows(results), operator_rows(results)
    write_separation(sep, paper, *(out_dir / f"composable_separation.{e}" for e in ("csv", "md", "tex")))
    write_operators(ops, paper, *(out_dir / f"composable_operators.{e}" for e in ("csv", "md", "tex")))
    for name in ("composable_separation", "composable_operators"):
        note_missing(out_dir / f"{name}.md", missing)
    for subset, methods in results.items():
        base = read_json(Path(f"results/composable/{subset}/baselines/separation.json"), "")
        plot_separation(subset, base["classes"], list(base["methods"]), [r for r in runs if r[0] == subset],
                        figures_dir / f"separation_{subset}.png")
        plot_loudness(subset, methods, base["source_rms_db"], figures_dir / f"si_sdr_vs_loudness_{subset}.png")
    return {"separation": sep, "operators": ops}


# --- the prior: generation (Table 4) and diversity (Table 5) ---------------------------------------------------

def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def generation_rows(evaluations: list[dict]) -> list[dict]:
    """One row per set an evaluation generated (or the references it scored), seeds averaged per (subset, p_mask)."""
    grouped: dict[tuple, list[dict]] = {}
    for ev in evaluations:
        grouped.setdefault((ev["subset"], ev["p_mask"]), []).append(ev)
    rows, references = [], set()
    for (subset, p_mask), evs in sorted(grouped.items()):
        for name in evs[0]["fad"]:
            if name in ("codec", "encoded"):  # the same test chunks for every prior of a subset: once
                if (subset, name) in references:
                    continue
                references.add((subset, name))
            vals = {ref: [e["fad"][name][ref] for e in evs if e["fad"][name][ref] is not None]
                    for ref in ("original", "encoded")}
            rows.append({"subset": subset, "p_mask": p_mask, "set": name, "seeds": len(evs),
                         "embedding": evs[0]["embedding"]["name"],
                         **{f"fad_{ref}": float(np.mean(v)) if v else None for ref, v in vals.items()}})
    return rows


def _generation_label(row: dict) -> str:
    name = row["set"]
    if name == "codec":
        return "codec-decoded test audio (the ceiling)"
    if name == "encoded":
        return "decomposition model's reconstruction (encoded)"
    if name == "unconditional":
        return f"unconditional, p_mask = {row['p_mask']}"
    return f"{name.removeprefix('regenerated_')} generated given the others, p_mask = {row['p_mask']}"


def _paper_generation(row: dict, table4: dict) -> dict | None:
    name, p = row["set"], row["p_mask"]
    key = ("unconditional_only" if p == 1.0 else "unconditional_masked") if name == "unconditional" else name
    return table4["rows"].get(key) if name != "encoded" else None


def write_generation(rows: list[dict], paper: dict, out_csv, out_md, out_tex) -> None:
    t4 = paper["table4"]
    csv = ["subset,p_mask,set,seeds,embedding,fad_original,fad_encoded,paper_fad_original_lc_a,paper_fad_encoded_lc_a"]
    md = ["| subset | set | seeds | FAD ↓ vs original | FAD ↓ vs encoded | paper (LC-A / LC-M): vs original | "
          "vs encoded |", "|---|---|---|---|---|---|---|"]
    tex = []
    for r in rows:
        p = _paper_generation(r, t4)
        if r["set"] == "codec":
            p = {"original": [paper["table1"]["fad_lc_a"], paper["table1"]["fad_lc_m"]], "encoded": None}
        po = " / ".join(map(str, p["original"])) if p and p.get("original") else ""
        pe = " / ".join(map(str, p["encoded"])) if p and p.get("encoded") else ""
        csv.append(f"{r['subset']},{r['p_mask']},{r['set']},{r['seeds']},{r['embedding']},{r['fad_original']},"
                   f"{r['fad_encoded']},{p['original'][0] if p and p.get('original') else ''},"
                   f"{p['encoded'][0] if p and p.get('encoded') else ''}")
        md.append(f"| {r['subset']} | {_generation_label(r)} | {r['seeds']} | {_fmt(r['fad_original'])} | "
                  f"{_fmt(r['fad_encoded'])} | {po} | {pe} |")
        tex.append(f"{r['subset'].replace('_', chr(92) + '_')} & {_generation_label(r).replace('_', chr(92) + '_')} & "
                   f"{_fmt(r['fad_original'])} & {_fmt(r['fad_encoded'])} \\\\")
    emb = rows[0]["embedding"] if rows else ""
    md += ["", f"FAD with the `{emb}` embedding"
               + ("" if emb.startswith("clap") else ": a stand-in for the paper's LAION-CLAP, whose weights cannot be "
                                                     "fetched here, so **not comparable to the paper's FAD**, only "
                                                     "between the rows of this table")
               + f". The paper's numbers: {paper['paper']}, {paper['source']}; {paper['caveat']}."]
    write_text(out_csv, "\n".join(csv) + "\n")
    write_text(out_md, "\n".join(md) + "\n")
    write_text(out_tex, _tex("FAD of generations with the recomposition prior (lower is better).",
                             "tab:composable-generation", ["subset", "set", "vs original", "vs encoded"], tex))


def diversity_rows(evaluations: list[dict]) -> list[dict]:
    rows = []
    for ev in evaluations:
        for source, d in ev["diversity"].items():
            for kind in ("real", "rand"):
                rows.append({"subset": ev["subset"], "p_mask": ev["p_mask"], "run": ev["run"], "source": source,
                             "against": kind, **{f"latent_mse_{s}": d["latent_mse"][kind][s] for s in ("mean", "std")},
                             **{f"ms_stft_{s}": d["ms_stft"][kind][s] for s in ("mean", "std")}})
    return rows


def write_diversity(rows: list[dict], paper: dict, out_csv, out_md, out_tex) -> None:
    t5 = paper["table5"]["rows"]
    keys = ["subset", "p_mask", "run", "source", "against", "latent_mse_mean", "latent_mse_std", "ms_stft_mean",
            "ms_stft_std"]
    csv = [",".join(keys + ["paper_mse_x1e3", "paper_ms_stft"])]
    md = ["| subset | run | generated source | against | latent MSE ↓ | MS-STFT | paper: MSE ×10³ | paper: MS-STFT |",
          "|---|---|---|---|---|---|---|---|"]
    tex = []
    for r in rows:
        p = t5.get(r["source"], {}).get(r["against"], {})
        csv.append(",".join(str(r[k]) for k in keys) + f",{p.get('mse', [''])[0]},{p.get('ms_stft', [''])[0]}")
        pm = f"{p['mse'][0]} ({p['mse'][1]})" if p else ""
        ps = f"{p['ms_stft'][0]} ({p['ms_stft'][1]})" if p else ""
        against = "the true stem (real)" if r["against"] == "real" else "a random test stem (rand)"
        md.append(f"| {r['subset']} | {r['run']} | {r['source']} | {against} | "
                  f"{_cell(r['latent_mse_mean'], r['latent_mse_std'], 4)} | {_cell(r['ms_stft_mean'], r['ms_stft_std'], 2)}"
                  f" | {pm} | {ps} |")
        tex.append(f"{r['subset'].replace('_', chr(92) + '_')} & {r['source']} & {r['against']} & "
                   f"${_cell(r['latent_mse_mean'], r['latent_mse_std'], 4)}$ & "
                   f"${_cell(r['ms_stft_mean'], r['ms_stft_std'], 2)}$ \\\\")
    md += ["", "Variations regenerate one source given the others' true latents. Latent MSE on the semantic latents "
               "z (per element), MS-STFT of the rendered source against the stem's audio; the real rows should sit "
               f"below the rand rows. The paper's numbers: {paper['paper']}, {paper['source']}; {paper['caveat']}."]
    write_text(out_csv, "\n".join(csv) + "\n")
    write_text(out_md, "\n".join(md) + "\n")
    write_text(out_tex, _tex("Diversity of variations (mean (std)).", "tab:composable-diversity",
                             ["subset", "source", "against", "latent MSE", "MS-STFT"], tex))


def generation_tables(cfg: dict, out_dir: str | Path) -> dict:
    """Tables 4 and 5 from the generation evaluations of ``cfg``'s prior runs."""
    evaluations, missing = [], []
    for r in cfg["priors"]:
        ev = read_json(Path(prior_dir(*r)) / "generation.json", "run the eval_generation step")
        if NOT_TRAINED in ev:
            missing.append((f"{r[0]}: prior p_mask {r[1]}, seed {r[2]}", ev[NOT_TRAINED]))
        else:
            evaluations.append(ev)
    paper, out_dir = paper_numbers("composable"), Path(out_dir)
    gen, div = generation_rows(evaluations), diversity_rows(evaluations)
    write_generation(gen, paper, *(out_dir / f"composable_generation.{e}" for e in ("csv", "md", "tex")))
    write_diversity(div, paper, *(out_dir / f"composable_diversity.{e}" for e in ("csv", "md", "tex")))
    for name in ("composable_generation", "composable_diversity"):
        note_missing(out_dir / f"{name}.md", missing)
    return {"generation": gen, "diversity": div}
