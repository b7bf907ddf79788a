"""The statistics of the runs: recipes pooled over their folds, each against its baselines patient by patient
(bootstrap interval and Wilcoxon signed-rank p), and what the 3-D largest connected component did. report.py
writes them; tools/seed_variance.py and tools/failure_analysis.py read them too."""

import numpy as np

from runs import metrics_rows, native_scores

# a patient whose DSC at the original geometry is below this counts as failed (issue "fewer failed patients")
FAILED = 0.5


def best_run(runs):
    """The reference-split run with the best validation mean DSC, a finished one where there is one."""
    reference_runs = [run for run in runs if run.fold is None]
    if not reference_runs:
        return None
    finished = [run for run in reference_runs if run.finished] or reference_runs
    return max(finished, key=lambda run: run.results["best_val_dsc"])


def mean_hd95(folder):
    """Mean HD95 over the patients of folder/predictions/metrics.csv (empty values skipped), or None."""
    values = [float(row["hd95"]) for row in metrics_rows(folder) if row["hd95"] not in ("", "nan")]
    return float(np.mean(values)) if values else None


def lcc_effect(folder):
    """{patient: (DSC, DSC without the 3-D largest connected component, components)} at the original geometry,
    from a metrics.csv that has them (inference since they were added), else {}."""
    return {row["patient"]: (float(row["dsc"]), float(row["dsc_without_lcc"]), int(row["components"]))
            for row in metrics_rows(folder) if row.get("dsc_without_lcc") not in (None, "")}


def lcc_rows(runs, threshold=0.01):
    """Per run (a fold: per fold) with inference: its DSC at 256x256 with and without the 3-D largest connected
    component, and the patients whose score the component changed by more than threshold."""
    rows = []
    for run in runs:
        effect = lcc_effect(run.folder)
        if not effect:
            continue
        changed = sorted((item for item in effect.items() if abs(item[1][0] - item[1][1]) > threshold),
                         key=lambda item: item[1][0] - item[1][1])
        rows.append(dict(
            experiment=run.name if run.fold is None else f"{run.name} fold {run.fold}",
            dsc=float(np.mean([value[0] for value in effect.values()])),
            without=float(np.mean([value[1] for value in effect.values()])),
            changed=", ".join(f"{patient} {dsc:.3f} (without {without:.3f}, {components} components)"
                              for patient, (dsc, without, components) in changed) or "none"))
    return rows


def paired_comparison(baseline, other, resamples=10_000, seed=0):
    """other against baseline on the patients both scored: {patient: DSC} each.

    Returns the number of patients, the mean difference (other - baseline) with a percentile bootstrap 95%
    interval over patients (resampled with replacement), the two-sided Wilcoxon signed-rank p of the differences
    (None when every one is 0), and how many patients improve, worsen or tie.
    """
    from scipy.stats import wilcoxon

    patients = sorted(set(baseline) & set(other))
    differences = np.array([other[patient] - baseline[patient] for patient in patients])
    if not len(differences):
        return None
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(resamples, len(differences)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = float(wilcoxon(differences).pvalue) if np.any(differences != 0) else None
    return dict(patients=len(differences), mean_difference=float(differences.mean()), low=float(low),
                high=float(high), wilcoxon_p=p,
                improved=int((differences > 0).sum()), worse=int((differences < 0).sum()),
                tied=int((differences == 0).sum()))


def cross_validation(runs):
    """Per recipe with fold runs: per-fold best DSC, their mean and std, the pooled per-patient mean on the
    grid, and the per-patient DSC at the original geometry pooled over the folds that have had inference."""
    table = {}
    for run in runs:
        if run.fold is None:
            continue
        entry = table.setdefault(run.name, dict(folds=run.params["folds"], fold_dsc={}, patients={}, native={},
                                                last={}, last_native={}, unfinished=[], fold_pixels={}))
        entry["fold_dsc"][run.fold] = run.results["best_val_dsc"]
        entry["patients"].update(run.per_patient_at_best)
        # the last epoch's scores beside the best's: choosing the best epoch on these patients flatters
        last = run.results["history"][-1] if run.results["history"] else {}
        entry["last"].update(last.get("val_dsc_per_patient", {}))
        entry["last_native"].update(last.get("val_dsc_native_per_patient", {}))
        if "pixels" in last:  # the training compute: image pixels trained on (the budget is per fold)
            entry["fold_pixels"][run.fold] = last["pixels"]
        entry["native"].update(native_scores(run.folder))
        if not run.finished:
            entry["unfinished"].append(run.fold)
    for entry in table.values():
        values = [entry["fold_dsc"][fold] for fold in sorted(entry["fold_dsc"])]
        native = list(entry["native"].values())
        pooled_last = list(entry["last"].values())
        # at 256x256 only where every pooled patient has it (runs from before the per-epoch native score lack it)
        last_native = list(entry["last_native"].values()) if len(entry["last_native"]) == len(entry["last"]) else []
        # the sample standard deviation over folds (0 for a single fold)
        entry.update(mean=float(np.mean(values)), std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                     pooled=float(np.mean(list(entry["patients"].values()))),
                     pooled_last=float(np.mean(pooled_last)) if pooled_last else None,
                     last_native_mean=float(np.mean(last_native)) if last_native else None,
                     native_mean=float(np.mean(native)) if native else None,
                     native_median=float(np.median(native)) if native else None,
                     complete=len(values) == entry["folds"] and not entry["unfinished"])
    return table


def is_reference_recipe(run):
    return run.results.get("recipe") == {}


def is_modern_recipe(run):
    from experiments import MODERN

    return run.results.get("recipe") == MODERN


def folds_pooled(entry):
    """"5-fold" when a recipe has run every fold, else "2 of 5 folds"."""
    run, total = len(entry["fold_dsc"]), entry["folds"]
    return f"{total}-fold" if run == total else f"{run} of {total} folds"


FAST_RECIPE = "unet-bce_dice-fast"  # the best recipe at the CPU protocol: each lever changes one thing of it


def paired_rows(runs, cv):
    """A row per recipe against the reference recipe, on the reference split and pooled over the folds; every
    other recipe against the modern recipe too (a loss or a network row changes one thing of it, and a k-fold
    recipe that claims to beat it must do so on the same patients)."""
    rows = []

    def compare(name, baseline, other, where):
        """baseline and other: (native-geometry scores, grid scores); native when both sides have it, else both
        on the grid: never one of each."""
        (native, grid), (other_native, other_grid) = baseline, other
        result = paired_comparison(*((native, other_native) if native and other_native else (grid, other_grid)))
        if result:
            rows.append(dict(experiment=name, baseline=where, patients=result["patients"],
                             mean_difference=result["mean_difference"],
                             interval=f"{result['low']:+.4f} to {result['high']:+.4f}",
                             wilcoxon_p=result["wilcoxon_p"],
                             counts=f"{result['improved']} / {result['worse']} / {result['tied']}"))

    def against_baselines(scores, candidates, where):
        """scores: {recipe name: (native, grid)}; candidates: the runs that may name the two baselines."""
        reference = next((run.name for run in candidates if is_reference_recipe(run)), None)
        modern = next((run.name for run in candidates if is_modern_recipe(run)), None)
        fast = next((run.name for run in candidates if run.name == FAST_RECIPE), None)  # the levers' baseline
        for baseline, skipped in ((reference, ()), (modern, (reference,)), (fast, (reference, modern))):
            if baseline in scores:
                for name in scores:
                    if name != baseline and name not in skipped:
                        compare(name, scores[baseline], scores[name], where(baseline, name))

    split_runs = [run for run in runs if run.fold is None]
    against_baselines({run.name: (native_scores(run.folder), run.per_patient_at_best) for run in split_runs},
                      split_runs, lambda baseline, name: f"{baseline}, reference split")
    against_baselines({name: (entry["native"], entry["patients"]) for name, entry in sorted(cv.items())},
                      [run for run in runs if run.fold is not None],
                      lambda baseline, name: f"{baseline}, {folds_pooled(cv[name])} pooled")
    return rows
