"""Archive finished result folders for git: answers packed, plots left for the reports to redraw.

A run appends its answers to plain JSONL (what crash safety needs); once a study is finished, its
answer files are gzipped in place (``X.jsonl`` -> ``X.jsonl.gz``), which every reader of a run
folder reads transparently (:func:`lpa.io.existing_jsonl`), and a rerun unpacks before appending.
Plots are not archived: they are drawn from ``results.json`` (:func:`redraw_plots`) and from the
cells' records (``lpa experiment SPEC --report-only``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpa.errors import LpaError
from lpa.io import pack_jsonl, run_lock
from lpa.report.tables import write_plots

# What an eval run writes per answer (and rejudge per verdict): the bulk of a results folder.
ANSWER_FILES = ("generations.jsonl", "judgements.jsonl", "outcomes.jsonl", "utility.jsonl")


@dataclass(frozen=True)
class PackedFile:
    path: Path  # the .gz written
    plain_bytes: int
    packed_bytes: int


def answer_files(folder: str | Path, names: tuple[str, ...] = ANSWER_FILES) -> list[Path]:
    """Every plain answer file under ``folder``, in a stable order."""
    root = _folder(folder)
    return sorted(p for name in names for p in root.rglob(name) if p.is_file())


def pack(folder: str | Path, names: tuple[str, ...] = ANSWER_FILES) -> list[PackedFile]:
    """Gzip every answer file under ``folder`` (``names``), each verified before its plain copy goes.

    Every file is checked first (not being written, no partial last line), so a folder with one
    unfinished run is refused whole instead of packed halfway.  Packing again is a no-op.
    """
    files = answer_files(folder, names)
    with run_lock(_folder(folder)):  # an eval run locks its folder: refuse to pack one being written
        for path in files:
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                raise LpaError(f"{path} ends in a partial line (an interrupted run): resume that run before "
                               "packing; nothing was packed.")
        done = []
        for path in files:
            size = path.stat().st_size
            packed = pack_jsonl(path)
            done.append(PackedFile(packed, size, packed.stat().st_size))
    return done


def redraw_plots(folder: str | Path) -> list[Path]:
    """Redraw ``plots/`` of every evaluation run under ``folder`` (each folder with a results.json)."""
    root = _folder(folder)
    runs = sorted(p.parent for p in root.rglob("results.json"))
    if not runs:
        raise LpaError(f"No evaluation run (a folder with results.json) under {root}.")
    return [plot for run in runs for plot in write_plots(run)]


def _folder(folder: str | Path) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise LpaError(f"{path} is not a folder; give a results folder (e.g. results/scale).")
    return path


__all__ = ["ANSWER_FILES", "PackedFile", "answer_files", "pack", "redraw_plots"]
