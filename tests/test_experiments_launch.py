"""The cluster launcher on this machine: submitit's local executor runs cells as real subprocess jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lpa.errors import LpaError
from lpa.experiments import ExperimentSpec, run_experiment
from lpa.testing import tiny_model, tiny_tokenizer

submitit = pytest.importorskip("submitit")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def _spec(tiny_dir, out):
    train = {"steps": 2, "batch_size": 2, "guard": {"every": 0}, "progress": False, "lora": {"r": 2, "alpha": 4},
             "benign": {"batch_size": 2}}
    return ExperimentSpec.model_validate(dict(
        name="launch", out=str(out), models=[tiny_dir], seeds=[0], device="cpu", reference=None,
        methods=[{"name": "base"}, {"name": "sft", "method": "sft", "traits": "big-five", "train": train}],
        eval={"benchmarks": [{"name": "smoke", "args": {"limit": 4}}], "attacks": ["direct"], "judges": ["keyword"],
              "generation": {"max_new_tokens": 3}, "bootstrap": 0},
        analyses={"overlap": False}))


def test_local_jobs_killed_one_resubmitted_and_report_only_collects_both(tiny_dir, tmp_path, interruptible_children):
    from lpa.experiments.launch import LaunchSettings, launch, wait

    spec = _spec(tiny_dir, tmp_path / "exp")
    settings = LaunchSettings(launcher="local", time_min=10)
    first = launch(spec, settings)
    assert len(first) == 2 and all(s.job_id.isdigit() for s in first)  # two real processes (their pids)
    sft = next(s for s in first if "/sft/" in s.cell)
    sft.job.cancel()  # killed before it could finish
    states = wait(first, poll_s=0.5)
    assert states[sft.job_id] != "RUNNING"
    from lpa.io import held_elsewhere

    deadline = time.time() + 60  # a killed job's process may outlive its state by a moment, holding the cell
    while held_elsewhere(sft.cell) and time.time() < deadline:
        time.sleep(0.2)
    finished = {p.parent.parent.name for p in (tmp_path / "exp").rglob("cell.json")}
    assert finished == {"base"}
    from lpa.testing import held_by_another_process

    Path(sft.cell).mkdir(parents=True, exist_ok=True)
    with held_by_another_process(sft.cell):  # someone is running it by hand: a job would find it locked
        assert launch(spec, settings) == []
    second = launch(spec, settings)  # only the unfinished cell is queued again
    assert [s.cell for s in second] == [sft.cell]
    wait(second, poll_s=0.5)
    result = run_experiment(spec, report_only=True, progress=False)
    assert {r["method"] for r in result.records} == {"base", "sft"}
    assert launch(spec, settings) == []  # everything finished: nothing to submit
    jobs = (tmp_path / "exp" / "_jobs" / "jobs.jsonl").read_text().splitlines()
    assert len(jobs) == 3


def test_slurm_without_partition_fails_before_submitting(tiny_dir, tmp_path):
    from lpa.experiments.launch import LaunchSettings, launch

    started = time.time()
    with pytest.raises(LpaError, match="--partition"):
        launch(_spec(tiny_dir, tmp_path / "exp"), LaunchSettings(launcher="slurm"))
    assert time.time() - started < 60 and not (tmp_path / "exp" / "_jobs").exists()


def test_slurm_jobs_carry_the_requested_resources(tmp_path, monkeypatch):
    """The sbatch script submitit would submit (a stand-in srun on PATH: no cluster here)."""
    import os
    from pathlib import Path

    from lpa.experiments.launch import LaunchSettings, executor_for

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    settings = LaunchSettings(launcher="slurm", partition="gpu", gpus_per_cell=1, cpus_per_cell=8, mem_gb=64,
                              time_min=90, slurm_args={"account": "lab"})
    executor = executor_for(settings, Path(tmp_path / "jobs"), "study")
    script = executor._executor._make_submission_file_text("python -m job", "uid")  # submitit's sbatch text
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=90",
                 "--account=lab", "--job-name=lpa-study"):
        assert f"#SBATCH {line}" in script


def test_slurm_without_srun_is_a_clear_error(tmp_path, monkeypatch):
    from pathlib import Path

    from lpa.experiments.launch import LaunchSettings, executor_for

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LpaError, match="login node"):
        executor_for(LaunchSettings(launcher="slurm", partition="gpu"), Path(tmp_path / "jobs"), "study")
