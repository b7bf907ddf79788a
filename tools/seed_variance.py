"""What a second training seed changes, and which recipe differences survive it.

    python -m tools.seed_variance --seed 42=results/real-data-cpu/runs --seed 1=results/real-data-cpu/runs-seed-1 \
        [--baseline RECIPE ...] [--figure results/seed-variance-cpu.png] [--out results/seed-variance-cpu.md]

Each --seed LABEL=RUNS names a runs folder of one training seed (the same folds: the split's seed is the same).
Per recipe that has k-fold runs, with the per-patient DSC at the original 256x256 geometry (tools/score_runs.py,
metrics.csv):
- per seed: the folds run, the pooled mean and median, the sample standard deviation over patients, the
  patients below 0.5, the pooled last-epoch figure beside the best-epoch one, and the training compute (image
  pixels a fold trained on, and its ratio to the baseline's: the issue's budget is twice the fast recipe's);
- seed against seed, on the patients both scored: the paired mean difference with its bootstrap interval and
  Wilcoxon p, the mean absolute per-patient change, and the patients that fail at one seed only and at both;
- each recipe against each baseline at every seed (the means on the paired patients, best epochs and last
  epochs) and on the seed-averaged per-patient scores: "better" only where the interval excludes 0 at every
  seed, and a verdict on fewer folds than the cross-validation has says on how many;
- with --figure, a panel a recipe run at two seeds: each patient's DSC at the first seed against the second's.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import comparisons
import report
from comparisons import FAILED
import results_files
from runs import load_runs


def recipe_scores(runs_dir):
    """{recipe: cross_validation entry} of a runs folder's k-fold recipes."""
    return comparisons.cross_validation(load_runs(runs_dir))


def describe(entry):
    native = entry["native"]
    values = np.array(list(native.values()))
    return dict(folds=f"{len(entry['fold_dsc'])} of {entry['folds']}", patients=len(values),
                mean=float(values.mean()) if len(values) else None,
                median=float(np.median(values)) if len(values) else None,
                sd=float(values.std(ddof=1)) if len(values) > 1 else None,
                failed=int((values < FAILED).sum()), last=entry["last_native_mean"])


def fold_pixels(entry):
    """The mean image pixels a fold trained on (its last epoch's running count), or None where no run says."""
    values = list(entry["fold_pixels"].values())
    return float(np.mean(values)) if values else None


def compute_text(entry, baseline_entry):
    """Gigapixels a fold (mean over the recipe's folds), and the ratio to the baseline recipe's on the same folds
    (folds differ in size) at the same seed."""
    pixels = fold_pixels(entry)
    if pixels is None:
        return "—"
    mine = entry["fold_pixels"]
    theirs = baseline_entry["fold_pixels"] if baseline_entry else {}
    common = sorted(set(mine) & set(theirs))
    ratio = f" ({sum(mine[f] for f in common) / sum(theirs[f] for f in common):.2f}x)" if common else ""
    return f"{pixels / 1e9:.2f}{ratio}"


def compare(baseline, other):
    """comparisons.paired_comparison of two {patient: DSC}, with the mean absolute change; None without overlap."""
    result = comparisons.paired_comparison(baseline, other)
    if result is None:
        return None
    patients = sorted(set(baseline) & set(other))
    result["baseline_mean"] = float(np.mean([baseline[p] for p in patients]))
    result["other_mean"] = float(np.mean([other[p] for p in patients]))
    result["mean_abs"] = float(np.mean([abs(other[p] - baseline[p]) for p in patients]))
    result["fail_one_only"] = sorted(p for p in patients if (baseline[p] < FAILED) != (other[p] < FAILED))
    result["fail_both"] = sorted(p for p in patients if baseline[p] < FAILED and other[p] < FAILED)
    return result


def difference_text(result):
    """The paired mean difference and its bootstrap interval."""
    return f"{result['mean_difference']:+.4f} [{result['low']:+.4f}, {result['high']:+.4f}]"


def means_text(result):
    """The two means on the paired patients, baseline first."""
    return f"{result['baseline_mean']:.4f} -> {result['other_mean']:.4f}"


def interval_text(result):
    p = "—" if result["wilcoxon_p"] is None else f"{result['wilcoxon_p']:.3g}"
    return f"{difference_text(result)}, p {p}, {result['improved']} / {result['worse']} / {result['tied']}"


def last_epoch_text(result, best_patients=None):
    """The two recipes' mean at their last epochs on the patients both have, and the paired difference; the count
    of patients where it is not the best epochs' (runs from before the per-epoch score at 256x256 lack it)."""
    if result is None:
        return "last epoch —"
    fewer = f" on {result['patients']} patients" if result["patients"] != best_patients else ""
    return f"last epoch{fewer} {means_text(result)}, {difference_text(result)}"


def excludes_zero(result):
    return result is not None and (result["low"] > 0 or result["high"] < 0)


def seed_average(scores):
    """{patient: mean over the seeds} for the patients every seed scored; scores: a list of {patient: DSC}."""
    common = set.intersection(*(set(s) for s in scores)) if scores else set()
    return {patient: float(np.mean([s[patient] for s in scores])) for patient in sorted(common)}


def lines_for(seeds, baselines):
    """seeds: {label: {recipe: cross_validation entry}}; baselines: recipe names, the first the one training compute
    is counted against. The markdown lines of the tables: per recipe and seed, seed against seed, and each recipe
    against each baseline (a section a baseline: a lever on top of the current best is paired with it, and with
    the fast recipe the issue's targets are stated against)."""
    baseline, labels = baselines[0], list(seeds)
    recipes = sorted({recipe for entries in seeds.values() for recipe in entries})
    out = ["## Per recipe and seed", "",
           "Training: the image pixels a fold trained on (gigapixels, mean over its folds; x "
           f"{baseline}'s on the same folds).", "",
           "| recipe | seed | folds | patients at 256x256 | mean | median | sd | below 0.5 | last epoch's mean | "
           "training |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for recipe in recipes:
        for label in labels:
            if recipe in seeds[label]:
                row = describe(seeds[label][recipe])
                cells = [report.format_value(row[key]) for key in ("mean", "median", "sd")]
                out.append(f"| {recipe} | {label} | {row['folds']} | {row['patients']} | " + " | ".join(cells)
                           + f" | {row['failed']} | {report.format_value(row['last'])} | "
                           f"{compute_text(seeds[label][recipe], seeds[label].get(baseline))} |")
    out += ["", "## Seed against seed (the same recipe, the same patients)", "",
            "Mean difference (second seed minus first) with its 95% bootstrap interval over patients, the "
            "Wilcoxon signed-rank p and improve / worsen / tie; the mean absolute change per patient; the "
            "patients below 0.5 at one seed only, and at both.", "",
            "| recipe | seeds | patients | difference | mean absolute change | fail at one seed only | fail at both |",
            "|---|---|---:|---|---:|---|---|"]
    for recipe, first, second, _ in seed_pairs(seeds):
        result = compare(seeds[first][recipe]["native"], seeds[second][recipe]["native"])
        out.append(f"| {recipe} | {second} - {first} | {result['patients']} | {interval_text(result)} | "
                   f"{result['mean_abs']:.4f} | {', '.join(result['fail_one_only']) or '—'} | "
                   f"{', '.join(result['fail_both']) or '—'} |")
    for against in baselines:
        out += against_lines(seeds, against)
    return out


def against_lines(seeds, baseline):
    """The section pairing every other recipe with `baseline`, at each seed and seed-averaged."""
    labels = list(seeds)
    recipes = sorted({recipe for entries in seeds.values() for recipe in entries})
    out = ["", f"## Each recipe against {baseline}", "",
            "At every seed on its own (the best epochs' means on the paired patients, then the paired "
            "difference; beside it the same at the last epochs), and on the per-patient scores averaged over the "
            "seeds. \"Better\" (or \"worse\") only where the best epochs' interval excludes 0 at every seed; a verdict "
            "resting on fewer folds than the cross-validation has names the folds it rests on.", "",
            "| recipe | " + " | ".join(f"seed {label}" for label in labels) + " | seed-averaged | verdict |",
            "|---|" + "---|" * len(labels) + "---|---|"]
    for recipe in recipes:
        if recipe == baseline:
            continue
        both = [label for label in labels if recipe in seeds[label] and baseline in seeds[label]]

        def paired(key):
            """A pairing a seed of the per-patient scores under key (None where a seed lacks either recipe)."""
            return [compare(seeds[label][baseline].get(key, {}), seeds[label][recipe].get(key, {}))
                    if label in both else None for label in labels]

        # the last epochs on the same footing: a gain that is only the epoch chosen on these patients shows there
        per_seed, per_seed_last = paired("native"), paired("last_native")
        averaged = compare(*(seed_average([seeds[label][name]["native"] for label in both])
                             for name in (baseline, recipe)))
        if not any(per_seed):
            continue
        if all(excludes_zero(result) for result in per_seed):
            verdict = "better at every seed" if all(r["low"] > 0 for r in per_seed) else \
                "worse at every seed" if all(r["high"] < 0 for r in per_seed) else "mixed"
        else:
            verdict = "not shown" + ("" if all(per_seed) else " (a seed is missing)")
        partial = shared_folds_short(seeds, recipe, baseline)
        if partial:  # a verdict on some folds is a screen's, not the 5-fold's the issue asks for
            verdict += f" (on {', '.join(partial)})"
        cells = [f"{means_text(result)}: " + interval_text(result)
                 + f" ({result['patients']} patients); {last_epoch_text(last, result['patients'])}" if result else "—"
                 for result, last in zip(per_seed, per_seed_last)]
        out.append(f"| {recipe} | " + " | ".join(cells) + f" | {interval_text(averaged) if averaged else '—'} | "
                   f"{verdict} |")
    return out


def shared_folds_short(seeds, recipe, baseline):
    """["seed L: k of n folds", ...] for each seed where the recipe and the baseline share fewer folds than the
    cross-validation has; [] where every paired seed covers them all."""
    out = []
    for label, entries in seeds.items():
        if recipe in entries and baseline in entries:
            shared = set(entries[recipe]["fold_dsc"]) & set(entries[baseline]["fold_dsc"])
            if len(shared) < entries[recipe]["folds"]:
                out.append(f"seed {label}: {len(shared)} of {entries[recipe]['folds']} folds")
    return out


def seed_pairs(seeds):
    """[(recipe, first label, second label, {patient: (DSC at first, DSC at second)})] for each recipe and each pair
    of consecutive seeds that scored it, on the patients both scored."""
    labels, pairs = list(seeds), []
    for recipe in sorted({recipe for entries in seeds.values() for recipe in entries}):
        present = [label for label in labels if recipe in seeds[label]]
        for first, second in zip(present, present[1:]):
            a, b = seeds[first][recipe]["native"], seeds[second][recipe]["native"]
            common = sorted(set(a) & set(b))
            if common:
                pairs.append((recipe, first, second, {patient: (a[patient], b[patient]) for patient in common}))
    return pairs


def plot_seed_pairs(pairs):
    """A panel a seed_pairs entry: a point a patient (DSC at one seed against the other), the diagonal, and the
    0.5 lines below which a patient counts as failed; the patients failing at one seed only in red."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5 * len(pairs), 4.5))
    for axis, (recipe, first, second, scores) in zip(figure.subplots(1, len(pairs), squeeze=False)[0], pairs):
        x, y = np.array(list(scores.values())).T
        one_only = (x < FAILED) != (y < FAILED)
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        axis.axhline(FAILED, color="grey", linestyle="--", linewidth=0.8)
        axis.axvline(FAILED, color="grey", linestyle="--", linewidth=0.8)
        axis.scatter(x[~one_only], y[~one_only], s=12, color="tab:blue")
        axis.scatter(x[one_only], y[one_only], s=16, color="tab:red", label=f"below {FAILED} at one seed only")
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal", xlabel=f"DSC at seed {first}",
                 ylabel=f"DSC at seed {second}", title=f"{recipe}\n{len(scores)} patients, mean |change| "
                 f"{np.mean(np.abs(y - x)):.3f}")
        axis.title.set_fontsize("small")
        axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", action="append", required=True, metavar="LABEL=RUNS",
                        help="a training seed's runs folder; give two or more")
    parser.add_argument("--baseline", action="append", metavar="RECIPE",
                        help="a recipe the others are paired with, a section each; repeat for several (default: "
                        f"{comparisons.FAST_RECIPE}); training compute is counted against the first")
    parser.add_argument("--figure", help="write the seed-against-seed panels here (PNG)")
    parser.add_argument("--out", help="write the tables here (markdown, with the command and commit)")
    args = parser.parse_args(argv)
    seeds = {}
    for item in args.seed:
        label, _, folder = item.partition("=")
        if not folder or not Path(folder).is_dir():
            parser.error(f"{item!r}: give LABEL=RUNS, an existing runs folder")
        seeds[label] = recipe_scores(folder)
    lines = lines_for(seeds, args.baseline or [comparisons.FAST_RECIPE])
    pairs = seed_pairs(seeds)
    if args.figure and pairs:
        plot_seed_pairs(pairs).savefig(args.figure, dpi=80)
        lines += ["", "Each patient's DSC at one seed against the other (red: below 0.5 at one seed only):", "",
                  results_files.image_line(args.figure, args.out, "DSC per patient, seed against seed")]
    if args.out:
        results_files.write(args.out, "What a second training seed changes", "tools.seed_variance", argv,
                            "Per-patient DSC at the original 256x256 geometry (inference with each fold's best "
                            "weights), pooled over the folds each seed has run; the folds are the same at every seed "
                            "(the split's seed is 42).", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
