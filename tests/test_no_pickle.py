"""Issue 25 §4: nothing in a run folder is unpickled; a planted pickle runs nothing."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from lpa.errors import LpaError
from lpa.training import state


class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: the file appears only if the pickle was run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _checkpoint(run, step=1):
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_state_round_trips_through_json_and_safetensors(tmp_path):
    original = state.LatState(norms={3: 1.5, "embed": 2.0}, eps={3: 0.1}, lr={3: 0.01}, passes=7, wall=1.25,
                              last_good={"w": torch.arange(4.0)}, guard_stats={"empty_rate": 0.0},
                              guard_warnings=["step 2: over-refusal"])
    folder = _checkpoint(tmp_path)
    state.save(folder, original)
    assert not list(folder.glob("*.pt"))
    loaded = state.load(folder)
    assert loaded.norms == {3: 1.5, "embed": 2.0} and loaded.eps == {3: 0.1} and loaded.passes == 7
    assert torch.equal(loaded.last_good["w"], torch.arange(4.0))
    assert loaded.guard_warnings == ["step 2: over-refusal"]
    assert state.latest_checkpoint(tmp_path) == folder


def test_a_planted_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    folder = _checkpoint(tmp_path / "run")
    with (folder / state.LEGACY).open("wb") as handle:
        pickle.dump({"norms": _Payload(str(marker))}, handle)
    assert state.latest_checkpoint(tmp_path / "run") == folder  # a legacy folder is still found...
    with pytest.raises(LpaError, match="refusing to load"):
        state.load(folder)  # ...but its pickle is never executed
    assert not marker.exists()


def test_a_legacy_plain_state_still_resumes(tmp_path):
    folder = _checkpoint(tmp_path)
    torch.save({"norms": {1: 2.0}, "eps": {1: 0.5}, "lr": {1: 0.1}, "passes": 3, "wall": 0.5, "last_good": None,
                "guard_stats": None, "guard_warnings": []}, folder / state.LEGACY)
    assert state.load(folder).eps == {1: 0.5}
