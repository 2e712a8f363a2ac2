"""Summarise the JSON cells of benchmarks/run.py into RESULTS.md and plots.

Reads every ``*.json`` cell in ``--results`` (default ``benchmarks/results``)
and writes:

- ``benchmarks/RESULTS.md``: the configuration, a table per protocol with the
  realised mean set size and noise rate of the training candidates and, per
  method, the mean +- std test accuracy over seeds and the mean wall time;
  the Co-Reg ablations; Co-Reg's division diagnostics; the commands that made
  the cells and machine notes (plus the cost section of ``COST.md`` when it
  exists);
- ``benchmarks/accuracy_vs_noise.png``: test accuracy against the realised
  noise rate, one line per method, one panel per dataset and protocol;
- ``benchmarks/coreg_curve_<dataset>.png``: Co-Reg's training curves (test
  accuracy per epoch, trusted-split sizes of both networks, and the precision
  of the trusted splits) for the seed that tracked them.

Example::

    python benchmarks/report.py
"""

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402

VERIFIED = list(run.VERIFIED)
METHOD_ORDER = ["majority-vote", "cc", "proden", "coreg", "coreg-no-copl", "coreg-no-proto",
                "coreg-no-cont", "coreg-no-unlabeled", *VERIFIED, "supervised"]
MAIN_METHODS = ["majority-vote", "cc", "proden", "coreg", "supervised"]
ABLATIONS = ["coreg", "coreg-no-copl", "coreg-no-proto", "coreg-no-cont",
             "coreg-no-unlabeled"]
LABELS = {"majority-vote": "panel majority vote", "cc": "CC", "proden": "PRODEN",
          "coreg": "Co-Reg", "coreg-no-copl": "w/o co-pseudo-labels",
          "coreg-no-proto": "w/o prototypes", "coreg-no-cont": "w/o contrastive",
          "coreg-no-unlabeled": "w/o unlabeled split",
          "coreg-verified1": "1 verified / class", "coreg-verified5": "5 verified / class",
          "coreg-verified20": "20 verified / class",
          "supervised": "supervised (true labels)"}
TRUE_LABELS = run.TRUE_LABELS


def load_cells(folder):
    cells = []
    for f in sorted(Path(folder).glob("*.json")):
        try:
            cells.append(json.loads(f.read_text()))
        except json.JSONDecodeError:
            print(f"skipping unreadable {f.name}", file=sys.stderr)
    return cells


def setting_label(protocol, setting):
    if setting == TRUE_LABELS:
        return "true labels"
    if protocol == "synthetic":
        q, eta = setting[1:].split("_eta")
        return f"q={q}, eta={eta}"
    if protocol == "teacher":
        return f"teacher's sets, rule {setting}"
    a, s, f, k = setting.split("_")
    return f"{a[1:]} annotators, {s[1:]} shots, view {f[1:]}, top-{k[1:]}"


def _sort_key(setting):
    try:
        return tuple(float(x) for x in setting.replace("q", "").split("_eta"))
    except ValueError:
        return (setting,)


def mean_std(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt_acc(values):
    if not values:
        return "-"
    m, s = mean_std(values)
    n = len(values)
    if n == 1:
        return f"{100 * m:.1f} (n=1)"
    return f"{100 * m:.1f} ± {100 * s:.1f}" + ("" if n == 3 else f" (n={n})")


def fmt_time(values):
    return "-" if not values else f"{np.mean(values):.0f}"


def group(cells):
    g = defaultdict(list)
    for c in cells:
        g[(c["dataset"], c["protocol"], c["setting"], c["method"])].append(c)
    return g


def table_rows(cells, g):
    rows = sorted({(c["dataset"], c["protocol"], c["setting"]) for c in cells
                   if c["setting"] != TRUE_LABELS},
                  key=lambda r: (r[0], r[1], _sort_key(r[2])))
    return rows


def method_cells(g, row, method):
    dataset, protocol, setting = row
    if method == "supervised":
        return g.get((dataset, protocol, TRUE_LABELS, method), [])
    found = g.get((dataset, protocol, setting, method), [])
    if not found and method == "teacher-zero-shot":  # the same whatever the rule
        found = next((c for (d, p, _, m), c in g.items()
                      if (d, p, m) == (dataset, protocol, method)), [])
    return found


def results_tables(cells, g):
    out = []
    for protocol in ("synthetic", "panel"):
        rows = [r for r in table_rows(cells, g) if r[1] == protocol]
        rows = [r for r in rows if any(method_cells(g, r, m) for m in MAIN_METHODS)]
        if not rows:
            continue
        methods = [m for m in MAIN_METHODS if any(method_cells(g, r, m) for r in rows)]
        title = {"synthetic": "Synthetic protocol (uniform flipping: q, eta)",
                 "panel": "Annotator-panel protocol (instance-dependent sets from a panel "
                          "of few-shot annotators)"}[protocol]
        out += [f"### {title}", "",
                "Test accuracy (%), mean ± std over seeds; set size and noise rate are "
                "the realised values of the training candidates (mean over seeds); "
                "time is the mean wall time of one cell in seconds.", ""]
        head = ["dataset", "setting", "mean set size", "noise rate"] + \
            [LABELS[m] for m in methods] + [f"time {LABELS[m]}" for m in methods
                                            if m != "majority-vote"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for row in rows:
            stats = [c["candidates"] for m in methods if m != "supervised"
                     for c in method_cells(g, row, m)]
            seeds_seen, sizes, noises = set(), [], []
            for m in methods:
                if m == "supervised":
                    continue
                for c in method_cells(g, row, m):
                    if c["seed"] not in seeds_seen:
                        seeds_seen.add(c["seed"])
                        sizes.append(c["candidates"]["mean_size"])
                        noises.append(c["candidates"]["noise_rate"])
            del stats
            accs = {m: [c["test_accuracy"] for c in method_cells(g, row, m)] for m in methods}
            best = max((np.mean(v) for m, v in accs.items()
                        if v and m not in ("supervised",)), default=None)
            cols = [row[0], setting_label(protocol, row[2]),
                    f"{np.mean(sizes):.2f}" if sizes else "-",
                    f"{100 * np.mean(noises):.1f}%" if noises else "-"]
            for m in methods:
                s = fmt_acc(accs[m])
                if accs[m] and m != "supervised" and best is not None \
                        and np.isclose(np.mean(accs[m]), best):
                    s = f"**{s}**"
                cols.append(s)
            for m in methods:
                if m != "majority-vote":
                    cols.append(fmt_time([c["wall_seconds"] for c in method_cells(g, row, m)]))
            out.append("| " + " | ".join(cols) + " |")
        out.append("")
    return out


def method_label(g, method):
    """A method's name in the tables: from its cells (run.py's METHOD_TABLE),
    else from LABELS, else the method's key."""
    for (_, _, _, m), cs in g.items():
        if m == method and cs[0].get("method_label"):
            return cs[0]["method_label"]
    return LABELS.get(method, method)


# rows of the teacher protocol in run.py's order, the peers first
TEACHER_ORDER = [m for m in run.TEACHER_METHODS if m != "supervised"]


def _teacher_method_order(methods):
    known = TEACHER_ORDER + [m for m in METHOD_ORDER if m not in TEACHER_ORDER + ["supervised"]]
    first = [m for m in known if m in methods]
    rest = sorted(m for m in methods if m not in known and m != "supervised")
    return first + rest + (["supervised"] if "supervised" in methods else [])


def _teacher_line(g, row, methods):
    some = [c for m in methods for c in method_cells(g, row, m) if "teacher" in c]
    if not some:
        return []
    t, cand = some[0]["teacher"], some[0]["candidates"]
    return [f"Teacher: {t['resolution']} px, views {', '.join(t['views'])}, aggregate "
            f"{t['aggregate']}, temperature {t['temperature']:g}; zero-shot accuracy "
            f"{100 * t['train_accuracy']:.1f}% on the {some[0]['n_train']} training images, "
            f"{100 * t['test_accuracy']:.1f}% on the {some[0]['n_test']} test images; "
            f"training sets: mean size {cand['mean_size']:.2f}, noise rate "
            f"{100 * cand['noise_rate']:.1f}%.", ""]


def teacher_tables(cells, g):
    """The teacher protocol: per dataset and candidate rule, every method's test
    accuracy per seed and mean ± std, with the teacher's own row."""
    rows = [r for r in table_rows(cells, g) if r[1] == "teacher"]
    if not rows:
        return []
    out = ["### Teacher protocol (candidate sets from a zero-shot teacher)", "",
           "Sets and probabilities from EfficientNet-Lite0's ImageNet head mapped to the "
           "class names (`benchmarks/teacher.py`); every trained method has the same head "
           "and budget. Test accuracy (%) per seed and mean ± std over seeds; time is the "
           "mean wall time of a cell in seconds.", ""]
    for row in rows:
        # the methods that ran with this rule (the teacher's own row and the
        # clean-label row, which no rule changes, come from any rule)
        methods = _teacher_method_order(
            {m for (d, p, _, m) in g if (d, p) == row[:2]
             and (m in ("teacher-zero-shot", "supervised") or method_cells(g, row, m))})
        seeds = sorted({c["seed"] for m in methods for c in method_cells(g, row, m)})
        out += [f"#### {row[0]}, rule `{row[2]}`", ""] + _teacher_line(g, row, methods)
        out += ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | time |",
                "|" + "---|" * (len(seeds) + 3)]
        for m in methods:
            cs = {c["seed"]: c for c in method_cells(g, row, m)}
            accs = [cs[s]["test_accuracy"] for s in seeds if s in cs]
            out.append("| " + " | ".join(
                [method_label(g, m)]
                + [f"{100 * cs[s]['test_accuracy']:.1f}" if s in cs else "-" for s in seeds]
                + [fmt_acc(accs), fmt_time([c["wall_seconds"] for c in cs.values()])]) + " |")
        out.append("")
    return out


def ablation_table(cells, g):
    rows = [r for r in table_rows(cells, g)
            if any(method_cells(g, r, m) for m in ABLATIONS[1:])]
    if not rows:
        return []
    out = ["### Co-Reg ablations", "",
           "Same setting, same seeds as listed (n = number of seeds); test accuracy (%).", "",
           "| dataset | setting | " + " | ".join(LABELS[m] for m in ABLATIONS) + " |",
           "|" + "---|" * (2 + len(ABLATIONS))]
    for row in rows:
        seeds = sorted({c["seed"] for m in ABLATIONS[1:] for c in method_cells(g, row, m)})
        cols = [row[0], setting_label(row[1], row[2]) + f" (seeds {seeds})"]
        for m in ABLATIONS:
            vals = [c["test_accuracy"] for c in method_cells(g, row, m) if c["seed"] in seeds]
            cols.append("-" if not vals else
                        (f"{100 * np.mean(vals):.1f}" if len(vals) == 1 else fmt_acc(vals)))
        out.append("| " + " | ".join(cols) + " |")
    out.append("")
    return out


def verified_table(cells, g):
    rows = [r for r in table_rows(cells, g) if any(method_cells(g, r, m) for m in VERIFIED)]
    if not rows:
        return []
    methods = ["coreg", *VERIFIED]
    out = ["### Co-Reg with verified labels", "",
           "K training samples per class given with their true label (singleton sets, "
           "`fit(..., verified=mask)`); test accuracy (%), seeds as listed.", "",
           "| dataset | setting | " + " | ".join(LABELS[m] for m in methods) + " |",
           "|" + "---|" * (2 + len(methods))]
    for row in rows:
        seeds = sorted({c["seed"] for m in VERIFIED for c in method_cells(g, row, m)})
        cols = [row[0], setting_label(row[1], row[2]) + f" (seeds {seeds})"]
        for m in methods:
            vals = [c["test_accuracy"] for c in method_cells(g, row, m) if c["seed"] in seeds]
            cols.append("-" if not vals else fmt_acc(vals) if len(vals) > 1
                        else f"{100 * vals[0]:.1f}")
        out.append("| " + " | ".join(cols) + " |")
    out.append("")
    return out


def _division_rows(cells, g):
    """(row, method) pairs with per-epoch division records: Co-Reg in every
    protocol, and in the teacher protocol every method that records them."""
    out = []
    for row in table_rows(cells, g):
        methods = ["coreg"]
        if row[1] == "teacher":
            methods = _teacher_method_order({m for (d, p, st, m) in g if (d, p, st) == row})
        for m in methods:
            cs = sorted(method_cells(g, row, m), key=lambda c: c["seed"])
            hist = cs[0].get("history") if cs else None
            if hist and any("trusted_per_class_a" in h for h in hist):
                out.append((row, m))
    return out


def division_curves(cells, g):
    """Per epoch after warm-up: trusted-split precision and recall of both
    networks and test accuracy, for the first seed of each Co-Reg setting;
    and the per-class trusted fraction at the last epoch."""
    out = []
    for row, method in _division_rows(cells, g):
        cs = sorted(method_cells(g, row, method), key=lambda c: c["seed"])
        hist = cs[0].get("history")
        name = "" if method == "coreg" else f" ({method_label(g, method)})"
        out += [f"#### Division per epoch: {row[0]}, {setting_label(row[1], row[2])}, "
                f"seed {cs[0]['seed']}{name}", "",
                "| epoch | trusted A / B | precision A / B | recall A / B | test acc |",
                "|---|---|---|---|---|"]
        for h in hist:
            if h.get("n_trusted_a") is None:
                continue

            def pct(key):
                v = h.get(key)
                return "-" if v is None else f"{100 * v:.1f}%"

            test = h.get("test_acc")
            out.append(f"| {h['epoch']} | {h['n_trusted_a']} / {h['n_trusted_b']} | "
                       f"{pct('trusted_clean_a')} / {pct('trusted_clean_b')} | "
                       f"{pct('trusted_recall_a')} / {pct('trusted_recall_b')} | "
                       f"{'-' if test is None else f'{100 * test:.1f}%'} |")
        last = [h for h in hist if "trusted_per_class_a" in h][-1]
        a, b = last["trusted_per_class_a"], last["trusted_per_class_b"]
        names = cs[0].get("class_names") or [str(i) for i in range(len(a))]
        out += ["", "Fraction of each true class trusted at the last epoch (A / B):", "",
                "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                "| " + " | ".join(f"{100 * x:.0f}% / {100 * y:.0f}%" for x, y in zip(a, b))
                + " |", ""]
    return out


def diagnostics_table(cells, g):
    rows = [r for r in table_rows(cells, g) if method_cells(g, r, "coreg")]
    if not rows:
        return []
    out = ["### Co-Reg's division at the last epoch", "",
           "Trusted split sizes |P| of networks A and B (mean over seeds) against the "
           "training set; the fraction of trusted samples whose candidate set holds the "
           "true label (precision) and the fraction of such clean samples that were "
           "trusted (recall); Co-Reg's own noise estimate (1 - mean trusted fraction) "
           "against the realised noise rate; and the accuracy of the disambiguated "
           "training labels (argmax of `label_distribution_`).", "",
           "| dataset | setting | n_train | trusted A / B | precision A / B | "
           "recall A / B | estimated noise | realised noise | train-label acc |",
           "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cs = method_cells(g, row, "coreg")
        last = [c["history"][-1] for c in cs if c.get("history")]
        if not last:
            continue

        def m(key):
            vals = [h.get(key) for h in last if h.get(key) is not None]
            return np.mean(vals) if vals else float("nan")

        out.append("| " + " | ".join([
            row[0], setting_label(row[1], row[2]), str(cs[0]["n_train"]),
            f"{m('n_trusted_a'):.0f} / {m('n_trusted_b'):.0f}",
            f"{100 * m('trusted_clean_a'):.1f}% / {100 * m('trusted_clean_b'):.1f}%",
            f"{100 * m('trusted_recall_a'):.1f}% / {100 * m('trusted_recall_b'):.1f}%",
            f"{100 * m('noise_rate'):.1f}%",
            f"{100 * np.mean([c['candidates']['noise_rate'] for c in cs]):.1f}%",
            f"{100 * np.mean([c.get('train_label_accuracy', np.nan) for c in cs]):.1f}%",
        ]) + " |")
    out.append("")
    return out


def config_table(cells):
    out = ["### Configuration", "",
           "Every method of a row uses the same backbone, epochs, batch size, learning "
           "rate (SGD, momentum 0.9, weight decay 5e-4, cosine schedule) and device. "
           "Co-Reg's prototype and contrastive terms switch on after epoch "
           "warm-up + start_contrastive (the reference uses start_contrastive = 10; the "
           "short CPU runs use a smaller value so that most post-warm-up epochs have "
           "the full loss). CC, PRODEN and the supervised bound train on weak "
           "augmentation.", "",
           "| dataset | config | encoder | image | n_train (synthetic / panel / teacher) | "
           "n_test | pool | epochs | Co-Reg warm-up | start_contrastive | "
           "contrastive on from epoch (1-based) | batch | lr | device |",
           "|" + "---|" * 14]
    seen = {}
    for c in cells:
        seen.setdefault(c["dataset"], {}).setdefault(c["protocol"], c)
    for dataset, by_protocol in sorted(seen.items()):
        c = next(iter(by_protocol.values()))
        cfg = c["config"]
        n_train = " / ".join(str(by_protocol[p]["n_train"]) if p in by_protocol else "-"
                             for p in ("synthetic", "panel", "teacher"))
        out.append("| " + " | ".join(str(v) for v in [
            dataset, " / ".join(sorted({x["config"].get("config_name", "?")
                                        for x in by_protocol.values()})), c["encoder"],
            "x".join(map(str, c["dataset_meta"]["image_shape"])), n_train, c["n_test"],
            cfg.get("pool_size") if "panel" in by_protocol else "-",
            cfg["epochs"], cfg["warmup"], cfg["start_contrastive"],
            cfg["warmup"] + cfg["start_contrastive"] + 2, cfg["batch_size"], cfg["lr"],
            cfg["device"]]) + " |")
    out.append("")
    return out


def machine_notes(cells):
    m = [c["machine"] for c in cells if "machine" in c]
    if not m:
        return []
    loads = [c["machine"].get("load_avg_at_start", [np.nan])[0] for c in cells
             if "machine" in c]
    first = m[0]
    gpus = sorted({x.get("gpu") for x in m if x.get("gpu")})
    total = sum(c["wall_seconds"] for c in cells)
    return ["### Machine", "",
            f"- {first['processor']}, {first['cpu_count']} CPU cores shared with other "
            f"work; torch {first['torch']}, {first['torch_threads']} torch thread per "
            f"process; device {', '.join(sorted({x['device'] for x in m}))}"
            + (f"; GPU {', '.join(gpus)}" if gpus else "") + ".",
            f"- 1-minute load average when the cells started: {np.nanmin(loads):.1f} to "
            f"{np.nanmax(loads):.1f} (wall times are inflated by the shared machine and "
            "vary between cells).",
            f"- {len(cells)} cells, {total / 60:.0f} min of cell wall time in total.", ""]


# ------------------------------------------------------------------ plots
def plot_accuracy_vs_noise(cells, g, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c["dataset"], c["protocol"]) for c in cells  # one setting: no curve
                     if c["setting"] != TRUE_LABELS and c["protocol"] != "teacher"})
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.6 * len(panels), 8.5), 3.8), squeeze=False)
    styles = {"majority-vote": ("tab:gray", "s"), "cc": ("tab:blue", "o"),
              "proden": ("tab:green", "^"), "coreg": ("tab:red", "D"),
              "supervised": ("black", None)}
    for ax, (dataset, protocol) in zip(axes[0], panels):
        rows = [r for r in table_rows(cells, g) if r[:2] == (dataset, protocol)]
        for m in MAIN_METHODS:
            pts = []
            for r in rows:
                cs = method_cells(g, r, m if m != "supervised" else "cc")
                acc = [c["test_accuracy"] for c in method_cells(g, r, m)]
                if not acc:
                    continue
                noise_cells = cs or [c for mm in MAIN_METHODS for c in method_cells(g, r, mm)
                                     if mm != "supervised"]
                noise = np.mean([c["candidates"]["noise_rate"] for c in noise_cells])
                pts.append((noise, np.mean(acc), np.std(acc, ddof=1) if len(acc) > 1 else 0))
            if not pts:
                continue
            pts.sort()
            x, y, e = (np.array(v) for v in zip(*pts))
            color, marker = styles[m]
            if m == "supervised":
                ax.axhline(100 * y.mean(), color=color, ls="--", lw=1,
                           label=LABELS[m])
                continue
            ax.errorbar(100 * x, 100 * y, yerr=100 * e, color=color, marker=marker,
                        capsize=3, lw=1.2, ms=5, label=LABELS[m],
                        ls="-" if protocol == "synthetic" else ":")
        ax.set_title(f"{dataset}, {protocol}")
        ax.set_xlabel("realised noise rate of training sets (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center",
               ncol=min(len(handles), 3 if len(panels) < 3 else 5), frameon=False)
    fig.tight_layout(rect=(0, 0.16 if len(panels) < 3 else 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_coreg_curves(cells, dataset, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = [c for c in cells if c["dataset"] == dataset and c["method"] == "coreg"
          and c.get("history") and any("test_acc" in h for h in c["history"])]
    cs.sort(key=lambda c: (c["protocol"] != "synthetic", _sort_key(c["setting"])))
    if not cs:
        return None
    ncols = min(len(cs), 3)
    nrows = int(np.ceil(len(cs) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.4 * ncols, 8.5), 3.6 * nrows + 0.6),
                             squeeze=False)
    for ax in axes.ravel()[len(cs):]:
        ax.set_visible(False)
    for ax, c in zip(axes.ravel(), cs):
        h = c["history"]
        ep = np.array([r["epoch"] for r in h])
        acc = np.array([r.get("test_acc", np.nan) for r in h], dtype=float)
        n = c["n_train"]
        cfg = c["config"]
        ax.plot(ep, 100 * acc, color="tab:red", lw=1.8, label="test accuracy")
        for key, color, label in (("n_trusted_a", "tab:blue", "|P| network A"),
                                  ("n_trusted_b", "tab:cyan", "|P| network B")):
            vals = np.array([r.get(key) if r.get(key) is not None else np.nan for r in h],
                            dtype=float)
            ax.plot(ep, 100 * vals / n, color=color, lw=1.2, label=label + " (% of n)")
        prec = np.array([np.nanmean([r.get("trusted_clean_a") or np.nan,
                                     r.get("trusted_clean_b") or np.nan])
                         if (r.get("trusted_clean_a") is not None) else np.nan for r in h],
                        dtype=float)
        ax.plot(ep, 100 * prec, color="tab:green", lw=1, ls="--",
                label="precision of P (clean %)")
        ax.axhline(100 * (1 - c["candidates"]["noise_rate"]), color="gray", lw=0.8,
                   ls=":", label="clean fraction of the sets")
        ax.axvline(cfg["warmup"] + 0.5, color="k", lw=0.8, ls="-.")
        ax.axvline(cfg["warmup"] + cfg["start_contrastive"] + 1.5, color="purple", lw=0.8,
                   ls="-.")
        ax.text(cfg["warmup"] + 0.6, 3, "warm-up ends", fontsize=7, rotation=90)
        ax.text(cfg["warmup"] + cfg["start_contrastive"] + 1.6, 3, "contrastive on",
                fontsize=7, rotation=90, color="purple")
        ax.set_ylim(0, 102)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.set_title(f"{dataset} {c['protocol']}: {setting_label(c['protocol'], c['setting'])}"
                     f" (seed {c['seed']})", fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3 if ncols < 3 else 5,
               frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, (0.15 if ncols < 3 else 0.09) / nrows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--md", default=str(HERE / "RESULTS.md"))
    p.add_argument("--plots", default=str(HERE))
    p.add_argument("--smoke", action="store_true",
                   help="check that the script runs: the report of the stored cells, "
                        "written to a temporary folder")
    args = p.parse_args(argv)
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="npll-smoke-"))
        args.md, args.plots = str(tmp / "RESULTS.md"), str(tmp)

    cells = load_cells(args.results)
    if not cells:
        print(f"no cells in {args.results}")
        return 1
    g = group(cells)
    plots = Path(args.plots)
    made = [plot_accuracy_vs_noise(cells, g, plots / "accuracy_vs_noise.png")]
    for dataset in sorted({c["dataset"] for c in cells}):
        made.append(plot_coreg_curves(cells, dataset, plots / f"coreg_curve_{dataset}.png"))
    made = [m for m in made if m]

    commands = sorted({c["command"] for c in cells})
    lines = ["# Benchmark results", "",
             "Made by `benchmarks/run.py` (cells in `benchmarks/results/`, one JSON per "
             "dataset, protocol, setting, method and seed) and summarised by "
             "`python benchmarks/report.py`.", "", "Commands that produced the cells:", ""]
    lines += [f"    {cmd}" for cmd in commands] + [""]
    lines += [f"{len(cells)} cells found (the full `--suite cpu` has 91).", ""]
    lines += config_table(cells)
    lines += ["## Results", ""]
    lines += results_tables(cells, g)
    lines += teacher_tables(cells, g)
    lines += ablation_table(cells, g)
    lines += verified_table(cells, g)
    lines += diagnostics_table(cells, g)
    lines += division_curves(cells, g)
    findings = HERE / "FINDINGS.md"
    if findings.exists():  # hand-written reading of the numbers above
        lines += [findings.read_text().rstrip(), ""]
    lines += ["### Plots", ""] + [f"- `{Path(m).name}`" for m in made] + [""]
    lines += [f"![{Path(m).stem}]({Path(m).name})" for m in made] + [""]
    lines += machine_notes(cells)
    cost = HERE / "COST.md"
    if cost.exists():
        lines += ["## Training cost", "", "See `COST.md` (made by `benchmarks/cost.py`).", ""]
    Path(args.md).write_text("\n".join(lines))
    print(f"wrote {args.md} ({len(cells)} cells, {len(lines)} lines) and {len(made)} plots",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
