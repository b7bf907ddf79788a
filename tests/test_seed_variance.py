"""tools/seed_variance.py on hand-made runs of two seeds: per-seed figures, seed against seed, and a recipe
called better only where it is better at every seed."""

import json

import pytest

from tools import seed_variance


def write_run(root, name, fold, scores, last=None, pixels=1e9):
    """A finished fold run with per-patient DSC at 256x256 (metrics.csv) and a history of one epoch that trained
    on `pixels` image pixels."""
    folder = root / name / f"fold-{fold}"
    (folder / "predictions").mkdir(parents=True)
    rows = "".join(f"{patient},{value}\n" for patient, value in scores.items())
    (folder / "predictions" / "metrics.csv").write_text("patient,dsc\n" + rows)
    history = [dict(epoch=1, val_dsc=0.5, val_dsc_per_patient=dict.fromkeys(scores, 0.5),
                    val_dsc_native_per_patient=last or scores, pixels=pixels)]
    (folder / "results.json").write_text(json.dumps(dict(params=dict(folds=2, fold=fold, epochs=1), history=history,
                                                         best_epoch=1, best_val_dsc=0.5)))


def test_seed_against_seed_and_a_verdict_that_needs_every_seed(tmp_path):
    fast = {0: dict(a=0.6, b=0.7), 1: dict(c=0.8, d=0.4)}
    for seed, shift in (("42", 0.0), ("1", 0.02)):  # the second seed scores every patient 0.02 higher
        for fold, scores in fast.items():
            write_run(tmp_path / seed, "unet-bce_dice-fast", fold, {p: v + shift for p, v in scores.items()})
            # the lever: +0.1 on every patient at seed 42, at seed 1 +0.1 on two and -0.1 on two
            lever = {p: v + shift + (0.1 if seed == "42" or p in "ac" else -0.1) for p, v in scores.items()}
            write_run(tmp_path / seed, "unet-bce_dice-fast-ema", fold, lever, pixels=(1.5e9, 2.5e9)[fold])
    seeds = {label: seed_variance.recipe_scores(tmp_path / label) for label in ("42", "1")}
    lines = seed_variance.lines_for(seeds, ["unet-bce_dice-fast"])
    text = "\n".join(lines)
    # per seed: 4 patients, mean 0.625, one below 0.5 (d)
    assert "| unet-bce_dice-fast | 42 | 2 of 2 | 4 | 0.6250 | 0.6500 |" in text
    assert "| unet-bce_dice-fast | 42 | 2 of 2 | 4 | 0.6250 | 0.6500 | 0.1708 | 1 |" in text
    # training compute a fold: 1 gigapixel for the baseline, (1.5 + 2.5) / 2 for the lever, twice the baseline's
    assert next(line for line in lines if line.startswith("| unet-bce_dice-fast | 1 |")).endswith("| 1.00 (1.00x) |")
    assert next(line for line in lines if line.startswith("| unet-bce_dice-fast-ema | 42 |")).endswith(
        "| 2.00 (2.00x) |")
    # seed against seed: +0.02 on every patient; d (0.40 -> 0.42) fails at both seeds
    seed_row = next(line for line in lines if line.startswith("| unet-bce_dice-fast | 1 - 42 |"))
    assert "+0.0200 [+0.0200, +0.0200]" in seed_row and seed_row.endswith("4 / 0 / 0 | 0.0200 | — | d |")
    lever_row = next(line for line in lines if line.startswith("| unet-bce_dice-fast-ema | 1 - 42 |"))
    assert "| 0.1000 |" in lever_row and "TCGA" not in lever_row
    against = lines[lines.index("## Each recipe against unet-bce_dice-fast"):]
    verdict = next(line for line in against if line.startswith("| unet-bce_dice-fast-ema |"))
    assert verdict.rstrip().endswith("| not shown |")  # better at seed 42 only
    assert "+0.1000 [+0.1000, +0.1000]" in verdict and "+0.0000 [-0.1000, +0.1000]" in verdict


def test_a_recipe_better_at_both_seeds_is_called_so():
    def entry(scores):
        return dict(native=scores, fold_dsc={0: 0.5}, folds=1, last_native_mean=None, fold_pixels={})

    base = dict(a=0.5, b=0.6, c=0.7)
    seeds = {seed: {"base": entry(base), "lever": entry({p: v + delta for p, v in base.items()})}
             for seed, delta in (("42", 0.05), ("1", 0.03))}
    lines = seed_variance.lines_for(seeds, ["base"])
    row = next(line for line in lines[lines.index("## Each recipe against base"):] if line.startswith("| lever |"))
    assert row.endswith("| better at every seed |")
    assert "+0.0400 [+0.0400, +0.0400]" in row  # seed-averaged: (0.05 + 0.03) / 2
    assert seed_variance.seed_average([dict(a=0.2, b=1.0), dict(a=0.4)]) == pytest.approx(dict(a=0.3))



def test_a_section_a_baseline_and_compute_counted_against_the_first():
    """A lever on top of the current best is paired with it in a section of its own; the fast recipe's section
    and the training ratio stay as they were."""
    def entry(scores, pixels):
        return dict(native=scores, fold_dsc={0: 0.5}, folds=1, last_native_mean=None, fold_pixels={0: pixels})

    fast = dict(a=0.5, b=0.6, c=0.7)
    best = {p: v + 0.1 for p, v in fast.items()}  # 0.6, 0.7, 0.8
    lever = dict(a=0.65, b=0.75, c=0.85)  # +0.15 over fast, +0.05 over best
    seeds = {"42": {"fast": entry(fast, 1e9), "best": entry(best, 2e9), "lever": entry(lever, 2e9)}}
    lines = seed_variance.lines_for(seeds, ["fast", "best"])
    assert lines.count("## Each recipe against fast") == 1 and lines.count("## Each recipe against best") == 1
    on_fast = lines[lines.index("## Each recipe against fast"):lines.index("## Each recipe against best")]
    on_best = lines[lines.index("## Each recipe against best"):]
    assert "+0.1500 [+0.1500, +0.1500]" in next(line for line in on_fast if line.startswith("| lever |"))
    assert "+0.0500 [+0.0500, +0.0500]" in next(line for line in on_best if line.startswith("| lever |"))
    assert "-0.1000 [-0.1000, -0.1000]" in next(line for line in on_best if line.startswith("| fast |"))
    assert not any(line.startswith("| best |") for line in on_best)  # not paired with itself
    # training compute against the first baseline only: 2 gigapixels against fast's 1
    assert next(line for line in lines if line.startswith("| lever | 42 |")).endswith("| 2.00 (2.00x) |")

def test_the_figure_has_a_panel_a_recipe_run_at_two_seeds_and_the_file_links_it(tmp_path):
    for seed, scores in (("42", dict(a=0.9, b=0.3, c=0.6)), ("1", dict(a=0.8, b=0.7, c=0.65, d=0.1))):
        write_run(tmp_path / seed, "unet-bce_dice-fast", 0, scores)
    write_run(tmp_path / "42", "unet-dice", 0, dict(a=0.5))  # one seed only: no panel
    seeds = {label: seed_variance.recipe_scores(tmp_path / label) for label in ("42", "1")}
    # the patients both seeds scored (d: seed 1 only), first seed's DSC then the second's
    assert seed_variance.seed_pairs(seeds) == [("unet-bce_dice-fast", "42", "1",
                                               dict(a=(0.9, 0.8), b=(0.3, 0.7), c=(0.6, 0.65)))]
    out, figure = tmp_path / "results" / "seeds.md", tmp_path / "results" / "seeds.png"
    figure.parent.mkdir()
    assert seed_variance.main(["--seed", f"42={tmp_path / '42'}", "--seed", f"1={tmp_path / '1'}", "--figure",
                               str(figure), "--out", str(out)]) == 0
    import imageio.v3 as iio

    assert iio.imread(figure).shape[:2] == (360, 360)  # one panel: 4.5 inches at 80 dpi
    text = out.read_text()
    assert "![DSC per patient, seed against seed](seeds.png)" in text
    assert "| unet-bce_dice-fast | 1 - 42 | 3 |" in text
    # b fails at seed 42 only: the table and the figure's red points say so
    assert "| 0.1833 | b | — |" in text


def test_the_last_epochs_are_paired_beside_the_best(tmp_path):
    """A lever whose gain is mostly the epoch chosen on the validation patients: +0.1 on each patient at its best
    epoch, +0.02 at the last; the row gives both, with the means on the paired patients."""
    base = dict(a=0.6, b=0.7, c=0.8)  # mean 0.7
    write_run(tmp_path / "42", "fast", 0, base, last=dict(a=0.5, b=0.6, c=0.7))  # last epoch mean 0.6
    write_run(tmp_path / "42", "lever", 0, {p: v + 0.1 for p, v in base.items()}, last=dict(a=0.52, b=0.62, c=0.72))
    lines = seed_variance.lines_for({"42": seed_variance.recipe_scores(tmp_path / "42")}, ["fast"])
    row = next(line for line in lines[lines.index("## Each recipe against fast"):] if line.startswith("| lever |"))
    assert "0.7000 -> 0.8000: +0.1000 [+0.1000, +0.1000]" in row and "(3 patients)" in row
    assert "last epoch 0.6000 -> 0.6200, +0.0200 [+0.0200, +0.0200]" in row
    # a recipe with no per-epoch scores at 256x256 (older runs) says so rather than pairing nothing, and a pairing
    # on fewer patients than the best epochs' says on how many
    assert seed_variance.last_epoch_text(None) == "last epoch —"
    fewer = seed_variance.compare(dict(a=0.5, b=0.6), dict(a=0.6, b=0.6))
    assert seed_variance.last_epoch_text(fewer, 3).startswith("last epoch on 2 patients 0.5500 -> 0.6000, +0.0500")


def test_a_verdict_on_fewer_folds_than_the_cross_validation_says_so():
    """Better at both seeds, but at seed 1 only one of the two folds has run for the lever: the verdict names the
    folds it rests on; at seed 42, where both folds ran, nothing is added."""
    def entry(scores, folds_run):
        return dict(native=scores, fold_dsc=dict.fromkeys(folds_run, 0.5), folds=2, last_native_mean=None,
                    fold_pixels={})

    base = dict(a=0.5, b=0.6, c=0.7, d=0.8)
    lever = {p: v + 0.05 for p, v in base.items()}
    seeds = {"42": {"base": entry(base, [0, 1]), "lever": entry(lever, [0, 1])},
             "1": {"base": entry(base, [0, 1]), "lever": entry(dict(a=0.55, b=0.65), [0])}}
    lines = seed_variance.lines_for(seeds, ["base"])
    row = next(line for line in lines[lines.index("## Each recipe against base"):] if line.startswith("| lever |"))
    assert row.endswith("| better at every seed (on seed 1: 1 of 2 folds) |")
    assert seed_variance.shared_folds_short({"42": seeds["42"]}, "lever", "base") == []
