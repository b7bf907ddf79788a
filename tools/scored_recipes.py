"""Recipes' scored k-fold runs as the analysis tools read them (tools/failure_analysis.py,
tools/missing_sequences.py): the LABEL=RUNS/EXPERIMENT arguments, each patient's metrics row from the fold that
did not train on it, and a label that says which folds when not all of them are scored."""

import argparse

from runs import fold_runs, metrics_rows

NUMERIC = ("dsc", "dsc_without_lcc", "precision", "recall", "predicted_voxels", "true_voxels", "components")


def recipe_rows(folder):
    """{patient: metrics row with floats} over every fold of folder (RUNS/EXPERIMENT), and the folds' runs."""
    runs = fold_runs(folder)
    rows = {}
    for run in runs:
        for row in metrics_rows(run.folder):
            # runs scored before a column existed (dsc_without_lcc, components) have nan there
            rows[row["patient"]] = dict(row, fold=run.fold, **{key: float(row.get(key) or "nan") for key in NUMERIC})
    return rows, runs


def with_folds(label, rows, runs):
    """label, and when the recipe's scored folds are not all k of its cross-validation, which they are:
    "context (folds 1, 3)", "seqdrop (fold 0)"; a table read at a glance must not pass two folds off as five."""
    folds = sorted({int(row["fold"]) for row in rows.values()})
    total = max((run.params.get("folds") or 0 for run in runs), default=0)
    if not folds or len(folds) >= total:
        return label
    return f"{label} (fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))})"


def recipes_parser(description, recipes="+"):
    """The command line of a tool that reads recipes' scored folds: DATA, LABEL=RUNS/EXPERIMENT ..., --out."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="kaggle_3m folder")
    parser.add_argument("recipes", nargs=recipes, metavar="LABEL=RUNS/EXPERIMENT")
    parser.add_argument("--out", help="write the analysis here (markdown, with the command and commit)")
    return parser


def labelled(parser, item):
    """(label, folder) of a LABEL=RUNS/EXPERIMENT argument."""
    label, _, folder = item.partition("=")
    if not folder:
        parser.error(f"{item!r}: give LABEL=RUNS/EXPERIMENT")
    return label, folder


def read(parser, items):
    """({label: {patient: row}}, {label: the folds' runs}) of LABEL=RUNS/EXPERIMENT arguments; a parser error for
    a recipe none of whose folds is scored."""
    recipes, runs = {}, {}
    for item in items:
        label, folder = labelled(parser, item)
        recipes[label], runs[label] = recipe_rows(folder)
        if not recipes[label]:
            parser.error(f"{folder}: no fold with predictions/metrics.csv (run python -m tools.score_runs first)")
    return recipes, runs
