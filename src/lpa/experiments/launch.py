"""Run a spec's cells as cluster jobs (``lpa experiment SPEC --launcher slurm|local``) with submitit.

Each unfinished cell becomes one job (a SLURM job array when there are several) that runs
:func:`lpa.experiments.cells.run_cell` in its own process with the requested resources; jobs belong
to the scheduler, not to the submitting shell, so closing it loses nothing.  Cells stay the unit of
resume: a job killed half-way leaves its checkpoints, answers and verdicts, submitting again queues
only cells without a finished ``cell.json`` (and the rerun resumes inside the cell), and
``lpa experiment SPEC --report-only`` collects whatever has finished.  ``local`` runs the same jobs as
subprocesses on this machine (submitit's local executor): the way to test a launch without a cluster.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lpa.errors import LpaError
from lpa.experiments.spec import ExperimentSpec
from lpa.io import append_jsonl, held_elsewhere

log = logging.getLogger(__name__)

LauncherName = Literal["slurm", "local"]
JOBS_FOLDER = "_jobs"


class LaunchSettings(BaseModel):
    """Resources of every cell's job."""

    model_config = ConfigDict(extra="forbid")

    launcher: LauncherName = Field("slurm", description="slurm (sbatch through submitit) or local (subprocesses here).")
    partition: str | None = Field(None, description="SLURM partition (required by most clusters).")
    gpus_per_cell: int = Field(0, ge=0, description="GPUs per cell job.")
    cpus_per_cell: int = Field(4, ge=1, description="CPU cores per cell job.")
    mem_gb: int = Field(32, ge=1, description="Memory per cell job (GiB).")
    time_min: int = Field(24 * 60, ge=1, description="Wall-time limit per cell job (minutes); a cut job resumes "
                          "when submitted again.")
    slurm_args: dict[str, Any] = Field(default_factory=dict, description="Further submitit slurm_* parameters "
                                       "(e.g. {account: ..., qos: ...}), passed as slurm_<key>.")


@dataclass
class Submitted:
    job_id: str
    cell: str
    job: Any  # the submitit Job (for waiting in tests and --wait)


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise LpaError("--launcher needs submitit: pip install 'lpa[cluster]' (or pip install submitit).") from None
    return submitit


def executor_for(settings: LaunchSettings, folder: Path, name: str) -> Any:
    """A submitit executor with the cell jobs' resources."""
    submitit = _submitit()
    if settings.launcher == "slurm" and not settings.partition and "partition" not in settings.slurm_args:
        raise LpaError("--launcher slurm needs --partition NAME (the cluster's partition for these jobs).")
    try:
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=settings.launcher)
    except RuntimeError as exc:  # no srun on this machine
        raise LpaError(f"--launcher {settings.launcher} cannot submit from here ({exc}); run the command on the "
                       "cluster's login node, or use --launcher local to run the jobs on this machine.") from None
    params: dict[str, Any] = dict(timeout_min=settings.time_min, cpus_per_task=settings.cpus_per_cell,
                                  gpus_per_node=settings.gpus_per_cell, mem_gb=settings.mem_gb, name=f"lpa-{name}",
                                  tasks_per_node=1, nodes=1)
    if settings.launcher == "slurm":
        if settings.partition:
            params["slurm_partition"] = settings.partition
        params.update({f"slurm_{k}": v for k, v in settings.slurm_args.items()})
    try:
        executor.update_parameters(**params)
    except (TypeError, ValueError) as exc:
        raise LpaError(f"Bad launcher settings: {exc}") from None
    return executor


def run_cell_job(spec_data: dict[str, Any], model: str, method: str, seed: int | None) -> str:
    """The job body: rebuild the spec, find the cell and run it (training and evaluation resume on their own)."""
    from lpa.experiments.cells import cells, run_cell

    spec = ExperimentSpec.model_validate(spec_data)
    cell = next(c for c in cells(spec) if (c.model, c.entry.name, c.seed) == (model, method, seed))
    run_cell(spec, cell, spec.out_dir)  # progress as timed lines in the job's log (lpa.progress)
    return str(cell.folder(spec.out_dir))


def launch(spec: ExperimentSpec, settings: LaunchSettings, only: dict[str, list[str]] | None = None) -> list[Submitted]:
    """Submit one job per unfinished cell (after the same checks as a local run); returns the submitted jobs."""
    from lpa.experiments.cells import cells, finished_record, select_cells
    from lpa.experiments.grid import check_experiment

    check_experiment(spec)
    root = spec.out_dir
    todo = [c for c in select_cells(cells(spec), only) if finished_record(spec, c, root) is None]
    running = [c for c in todo if held_elsewhere(c.folder(root))]
    if running:  # a job for them would only find the folder locked
        log.warning("not submitted, another process is running them: %s",
                    "; ".join(str(c.folder(root)) for c in running))
        todo = [c for c in todo if c not in running]
    if not todo:
        return []
    folder = root / JOBS_FOLDER
    executor = executor_for(settings, folder, spec.name)
    data = spec.model_dump(mode="json")
    jobs = []
    with executor.batch():  # one SLURM job array
        for cell in todo:
            jobs.append((cell, executor.submit(run_cell_job, data, cell.model, cell.entry.name, cell.seed)))
    out = [Submitted(str(job.job_id), str(cell.folder(root)), job) for cell, job in jobs]
    append_jsonl(folder / "jobs.jsonl", [{"job_id": s.job_id, "cell": s.cell, "launcher": settings.launcher,
                                          "submitted": time.time()} for s in out])
    return out


def wait(submitted: list[Submitted], poll_s: float = 2.0) -> dict[str, str]:
    """Block until every job ends; job id -> final state (a failed job raises nothing: its cell stays unfinished)."""
    while any(not s.job.done() for s in submitted):
        time.sleep(poll_s)
    return {s.job_id: s.job.state for s in submitted}


__all__ = ["JOBS_FOLDER", "LaunchSettings", "Submitted", "executor_for", "launch", "run_cell_job", "wait"]
