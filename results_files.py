"""What every results file that a command writes shares: the line naming the command and the commit that wrote it,
and the hand-written analysis between two markers, kept when the file is written again (REPORT.md's too)."""

import os
import shlex
import sys
from pathlib import Path

from safe_files import write_atomic

ANALYSIS_START = "<!-- analysis: written by hand, kept when the report is regenerated -->"
ANALYSIS_END = "<!-- end of analysis -->"
DEFAULT_ANALYSIS = "_No analysis written yet._"


def kept_analysis(out):
    """The hand-written analysis between the markers of the file out, or DEFAULT_ANALYSIS."""
    out = Path(out)
    if out.exists():
        text = out.read_text()
        if ANALYSIS_START in text and ANALYSIS_END in text:
            return text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0].strip()
    return DEFAULT_ANALYSIS


def analysis_section(out, heading="## What it says"):
    """The lines of a results file's hand-written analysis: what is between the markers in out now survives its
    regeneration."""
    return ["", heading, "", ANALYSIS_START, kept_analysis(out), ANALYSIS_END]


def written_by(module, argv=None):
    """"Written by `python -m module argv...` at commit C." (runtime.git_commit: -dirty with uncommitted changes);
    argv None: the command line's own, as a tool's main(argv=None) was called."""
    import runtime  # it loads torch: only when a file is written

    argv = sys.argv[1:] if argv is None else argv
    return f"Written by `{shlex.join(['python', '-m', module, *argv])}` at commit {runtime.git_commit()}."


def image_line(picture, out, alt):
    """A markdown image of picture, its path relative to the folder of the results file out (or as given without
    one), so that the link works where the file is read."""
    target = Path(os.path.relpath(picture, Path(out).parent)) if out else Path(picture)
    return f"![{alt}]({target.as_posix()})"


def write(out, title, module, argv, intro, lines):
    """Write out: the title, who wrote it (written_by) and what its figures are (intro), lines, and the kept
    analysis."""
    text = [f"# {title}", "", f"{written_by(module, argv)} {intro}".rstrip(), "", *lines, *analysis_section(out)]
    write_atomic(out, ("\n".join(text) + "\n").encode())
