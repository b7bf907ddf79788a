"""tools/readme_replay.py: the README's own-image commands, as the replay reads them and runs them in a clone."""

import shutil

import pytest

from tools import readme_replay


def test_it_reads_the_readmes_three_own_image_commands():
    commands = readme_replay.readme_commands(readme_replay.ROOT / "README.md")
    assert [readme_replay.data_path_of(command) for command in commands] == ["stage1_train", "lung/data", "my_images"]
    assert commands[0] == ["python", "train.py", "-p", "data_path", "stage1_train", "-p", "image_size", "96"]
    assert readme_replay.with_data_path(commands[1], "/here/lung") == \
        ["python", "train.py", "-p", "data_path", "/here/lung", "-p", "image_size", "128"]


@pytest.mark.parametrize("text, words", [
    ("# Title\n", "no '## Your own images' section"),
    ("## Your own images\nno block\n## Next\n```bash\npython train.py\n```\n", "has no ```bash block"),
    ("## Your own images\n```bash\npapermill x\n```\n", "no `python train.py` line"),
])
def test_a_readme_without_the_commands_says_what_is_missing(tmp_path, text, words):
    (tmp_path / "README.md").write_text(text)
    with pytest.raises(ValueError, match=words):
        readme_replay.readme_commands(tmp_path / "README.md")


@pytest.mark.parametrize("data, words", [
    ("stage1_train", "give README_PATH=LOCAL_PATH"),
    ("my_data=/x", "--data names my_data, which no README command uses"),
])
def test_bad_data_arguments_are_refused_before_any_clone(capsys, data, words):
    with pytest.raises(SystemExit) as exit:
        readme_replay.main(["--data", data])
    assert exit.value.code == 2 and words in capsys.readouterr().err


def test_only_a_data_path_the_readme_uses_can_be_chosen(capsys):
    with pytest.raises(SystemExit) as exit:
        readme_replay.main(["--only", "stage1_train", "--only", "stage2_train"])
    assert exit.value.code == 2 and "--only names stage2_train, which no README command uses" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_a_readme_command_trains_and_infers_in_a_fresh_clone_on_phantom_images(tmp_path, monkeypatch):
    """One command (the nuclei's, at 96 px): on phantom images the three differ only in their size and folder name,
    which the tests above read; the clone, the run folder, inference and the clean tree are what this checks."""
    if shutil.which("git") is None or not (readme_replay.ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    monkeypatch.setattr(readme_replay.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "work"))
    out = tmp_path / "replay.md"
    assert readme_replay.main(["--only", "stage1_train", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| `python train.py")]
    assert len(rows) == 1 and "-p data_path stage1_train -p image_size 96`" in rows[0]
    cells = rows[0].split(" | ")
    # trained and inferred (exit 0), left weights and results.json, scored the 20% validation images of 40
    assert cells[2].startswith("0, ") and cells[3] == "yes, yes" and cells[4].startswith("0, ")
    assert cells[5] == "8, 8 |"
    assert "`git status --porcelain` in the clone afterwards: empty" in out.read_text()
