"""Does a fresh clone train and infer on users' own images with the README's commands? Replays them and writes
what each left.

    python -m tools.readme_replay --data stage1_train=/data/dsb2018/stage1_train --data lung/data=/data/lung/data \
        [--only stage1_train] [--epochs 1] [--out results/readme-replay-cpu.md]                  (repo root)

Each `python train.py` line of the README's "Your own images" block runs in a `git clone` of this checkout's
HEAD (committed files only, as a newcomer gets them), with its data_path swapped for where that data is here
(--data README_PATH=LOCAL_PATH; a README path given none is made here as phantom images_masks data) and its
epochs cut to --epochs (the replay checks the path, not the score; --only README_PATH replays only the commands
of those data paths); then inference.ipynb runs on the same data_path through papermill, as the README says.
Recorded per command: exit status, wall time, the run's files, the validation cases inference scored and the
masks it wrote, and whether the clone's `git status` stayed clean.
"""

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results_files
import runs

SECTION = "## Your own images"
ROOT = Path(__file__).resolve().parent.parent


def readme_commands(readme):
    """The `python train.py` lines (as argument lists, comments dropped) of the first bash block of the README's
    "Your own images" section; ValueError where there is none."""
    text = Path(readme).read_text()
    if SECTION not in text:
        raise ValueError(f"{readme}: no '{SECTION}' section to replay")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    if "```bash" not in section:
        raise ValueError(f"{readme}: its '{SECTION}' section has no ```bash block")
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("python train.py")]
    if not commands:
        raise ValueError(f"{readme}: its '{SECTION}' block has no `python train.py` line")
    return commands


def data_path_of(command):
    """The value given to `-p data_path` in a train.py argument list (None without one)."""
    for index, argument in enumerate(command[:-2]):
        if argument == "-p" and command[index + 1] == "data_path":
            return command[index + 2]
    return None


def with_data_path(command, local):
    """command with its data_path value replaced by local."""
    command = list(command)
    index = next(i for i in range(len(command) - 2) if command[i] == "-p" and command[i + 1] == "data_path")
    command[index + 2] = str(local)
    return command


def run(command, cwd, log):
    """(exit status, wall seconds) of command in cwd, its output appended to log."""
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        status = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    return status, time.perf_counter() - start


def newest_run(runs_dir, before):
    """The run folder that appeared under runs_dir since before (a set of folders), or None."""
    new = sorted(set(Path(runs_dir).glob("*")) - before, key=lambda path: path.stat().st_mtime)
    return new[-1] if new else None


def replay(readme_command, local, clone, epochs, log):
    """One README line in the clone: train, then infer; a dict of what they left."""
    runs_dir = clone / "runs"
    before = set(runs_dir.glob("*")) if runs_dir.exists() else set()
    command = [sys.executable, *with_data_path(readme_command, local)[1:], "-p", "epochs", str(epochs)]
    train_status, train_seconds = run(command, clone, log)
    folder = newest_run(runs_dir, before)
    notebook = ["papermill", "--log-output", "inference.ipynb", "inference.out.ipynb", "-p", "data_path", str(local)]
    infer_status, infer_seconds = run(notebook, clone, log) if folder else (None, 0.0)
    scored = len(runs.metrics_rows(folder)) if folder else 0
    masks = len(list((folder / runs.PREDICTIONS_DIR / "masks").glob("*_mask.*"))) if folder else 0  # not the copies
    return dict(command=shlex.join(readme_command), local=local, train=train_status, train_seconds=train_seconds,
                infer=infer_status, infer_seconds=infer_seconds, run=folder.name if folder else None,
                weights=bool(folder and (folder / runs.WEIGHTS_FILE).exists()),
                results=bool(folder and runs.results_file(folder).exists()), scored=scored, masks=masks)


def lines_of(rows, clean):
    lines = ["| README command | data here | train: exit, wall | run folder: weights, results.json | "
             "inference: exit, wall | cases scored, masks written |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['command']}` | {row['local']} | {row['train']}, {row['train_seconds']:.0f} s | "
                     f"{'yes' if row['weights'] else 'NO'}, {'yes' if row['results'] else 'NO'} | "
                     f"{row['infer']}, {row['infer_seconds']:.0f} s | {row['scored']}, {row['masks']} |")
    lines += ["", "`git status --porcelain` in the clone afterwards: " + ("empty (every file the commands wrote is "
              "ignored)" if not clean else "\n\n```\n" + clean + "```")]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[], metavar="README_PATH=LOCAL_PATH",
                        help="where a data_path of the README is here")
    parser.add_argument("--only", action="append", default=[], metavar="README_PATH",
                        help="replay only the command of this README data_path (repeatable; default: every one)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", help="write the table here (markdown)")
    parser.add_argument("--log", help="the commands' output (default: replay.log in the temporary folder, kept)")
    args = parser.parse_args(argv)
    malformed = [item for item in args.data if "=" not in item]
    if malformed:
        parser.error(f"--data {malformed[0]}: give README_PATH=LOCAL_PATH, e.g. stage1_train=/data/stage1_train")
    given = dict(item.split("=", 1) for item in args.data)
    try:
        commands = readme_commands(ROOT / "README.md")
    except ValueError as error:
        parser.error(str(error))
    for option, named in (("--data", given), ("--only", args.only)):
        unknown = sorted(set(named) - {data_path_of(command) for command in commands})
        if unknown:
            parser.error(f"{option} names {', '.join(unknown)}, which no README command uses")
    if args.only:
        commands = [command for command in commands if data_path_of(command) in args.only]
    import torch

    import runtime
    import synthetic

    work = Path(tempfile.mkdtemp(prefix="readme-replay-"))
    clone, log = work / "clone", Path(args.log or work / "replay.log")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    rows = []
    for command in commands:
        local = given.get(data_path_of(command))
        if local is None:
            # 40 images: the 32 of the training split fill two of the recipe's batches of 16
            local = synthetic.make_phantom_folder(work / "phantom" / data_path_of(command), images=40)
        rows.append(replay(command, Path(local), clone, args.epochs, log))
        print(f"{rows[-1]['command']}: train {rows[-1]['train']}, inference {rows[-1]['infer']}, "
              f"{rows[-1]['scored']} cases scored", flush=True)
    clean = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    machine = (f"{datetime.date.today()}, {runtime.device_description(torch.device('cpu'))}, load average "
               f"{os.getloadavg()[0]:.1f} at the end")
    lines = lines_of(rows, clean)
    if args.out:
        results_files.write(
            args.out, "The README's \"Your own images\" commands, replayed in a fresh clone", "tools.readme_replay",
            argv, "Each command in a `git clone` of that commit, its data_path swapped for the local copy, "
            f"`-p epochs {args.epochs}` added (a check of the path, not a score), then `papermill --log-output "
            "inference.ipynb inference.out.ipynb -p data_path <the same>`. "
            f"Machine: {machine}; the wall times are a record, not speed figures (nothing else was stopped).", lines)
    print("\n".join(lines) + f"\n(output of the commands: {log})")
    return 0 if all(row["train"] == 0 and row["infer"] == 0 and row["scored"] for row in rows) and not clean else 1


if __name__ == "__main__":
    sys.exit(main())
