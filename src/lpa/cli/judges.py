"""CLI: `lpa judges list | validate | fit | agreement | sample | add` — judges and their measured agreement with labelled answers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lpa.errors import LpaError

GoldOption = typer.Option("shipped", "--gold", "-g", help="Labelled JSONL file, or 'shipped' (the packaged gold set).")


def register(app: typer.Typer) -> None:
    judges = typer.Typer(help="Judges that label answers, and their agreement with labelled answers.",
                         no_args_is_help=True)
    judges.command("list")(list_judges)
    judges.command("validate")(validate_command)
    judges.command("fit")(fit_command)
    judges.command("agreement")(agreement_command)
    judges.command("sample")(sample_command)
    judges.command("add")(add_command)
    judges.command("rejudge")(rejudge_command)
    app.add_typer(judges, name="judges")


def list_judges() -> None:
    """Every registered judge with its arguments, and the default."""
    from lpa.cli.eval import _plugin_table
    from lpa.eval.judges import DEFAULT_JUDGE, JUDGES

    _plugin_table(JUDGES)
    print(f"Default judge: {DEFAULT_JUDGE}. `lpa judges validate` measures any judge against labelled answers.")


def validate_command(
    judge: str = typer.Option("keyword,trained", "--judge", "-j",
                              help="Judges to validate: comma list, or ';' between judges with arguments."),
    gold: str = GoldOption,
    split: str = typer.Option("test", "--split", help="test | dev | all rows of the gold file."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the full results (incl. predictions) as JSON."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for 95% CIs."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    confusion: bool = typer.Option(True, "--confusion/--no-confusion", help="Print each judge's confusion matrix."),
    adapters: Path | None = typer.Option(None, "--adapters", help="Folder holding the gold rows' adapters "
                                         "(NAME/adapter); only the refusal probe needs them."),
    by: str | None = typer.Option(None, "--by", help="Also print κ per value of these gold fields (comma list; "
                                  "'source' = model / method), from the same verdicts."),
) -> None:
    """Accuracy, Cohen's kappa, confusion, P/R of complied (harmful) and refused (benign), s/100, with CIs.

    ``--by attack`` gives each judge's κ per attack family (what reports use to warn beside an ASR whose judge is
    below κ 0.75 on that family, ``lpa.eval.attack_report``)."""
    from dataclasses import replace

    from lpa.eval.judges.support.gold import load_gold
    from lpa.eval.judges.support.validate import (
        breakdown,
        breakdown_table,
        confusion_text,
        model_loader,
        row_group,
        validate_judge,
        validation_table,
    )
    from lpa.io import atomic_write_json
    from lpa.plugins import split_specs

    rows = load_gold(gold, split)
    fields = [f.strip() for f in by.split(",") if f.strip()] if by else []
    for field in fields:
        row_group(rows[0], field)  # an unknown field fails before any judge runs
    results = []
    specs = split_specs(judge)
    for spec in specs:
        result = validate_judge(spec, rows, n_boot=bootstrap, seed=seed,
                                loader=model_loader(str(adapters) if adapters else None))
        if sum(s.split(":", 1)[0] == result.judge for s in specs) > 1:
            result = replace(result, judge=spec)  # two settings of one judge (e.g. a rule on/off) get their own rows
        results.append(result)
        print(f"{result.judge}: done ({result.n} rows, {result.errors} errors)", flush=True)
    labels = {lab: sum(r.label == lab for r in rows) for lab in ("complied", "refused", "nonsense")}
    print(f"\nGold: {gold} split={split} n={len(rows)} {labels}; brackets = bootstrap 95% CI\n")
    print(validation_table(results))
    if confusion:
        for result in results:
            print("\n" + confusion_text(result))
    tables = {field: breakdown(rows, results, field, n_boot=bootstrap, seed=seed) for field in fields}
    for field, table in tables.items():
        print(f"\nBy {field}:\n\n" + breakdown_table(table, field))
    if out is not None:
        atomic_write_json(out, {"gold": str(gold), "split": split, "n": len(rows), "ids": [r.id for r in rows],
                                "judges": [r.as_dict() for r in results], **({"by": tables} if tables else {})})
        print(f"\nWrote {out}")


def fit_command(
    gold: str = GoldOption,
    split: str = typer.Option("dev", "--split", help="Rows to fit on (dev; never fit on the reporting split)."),
    out: Path = typer.Option(Path("runs/judges/trained_judge.npz"), "--out", "-o",
                             help="Where to write the fitted judge (.npz); use it as 'trained:weights=PATH'."),
    c: float | None = typer.Option(None, "--c", help="Inverse L2 strength (default: chosen by 5-fold CV)."),
    seed: int = typer.Option(0, "--seed", help="CV fold seed."),
) -> None:
    """Refit the trained judge on a gold file's dev split (needs scikit-learn, the dev extra)."""
    from lpa.eval.judges.support.gold import load_gold
    from lpa.eval.judges.trained import fit_trained_judge

    rows = load_gold(gold, split)
    summary = fit_trained_judge(rows, out, c=c, seed=seed)
    print(f"Fitted on {summary['n']} rows {summary['counts']}; C={summary['C']}, embedding "
          f"{'used' if summary['uses_embedding'] else 'not used'}; grouped 5-fold CV kappa "
          f"{summary['cv_kappa'][summary['best']]:.3f}; class offsets {[round(b, 2) for b in summary['bias']]} "
          f"(mean per-model CV kappa {summary['cv_kappa_calibrated_per_model_mean']:.3f})"
          f"; wrote {out}")


def agreement_command(
    labels: Path = typer.Argument(..., help="JSONL of {id, label} from a second, blind labelling of gold rows."),
    gold: str = GoldOption,
    split: str = typer.Option("test", "--split", help="test | dev | all rows of the gold file."),
    name: str = typer.Option("second annotator", "--name", help="Name of the second labelling in the table."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for 95% CIs."),
) -> None:
    """Inter-annotator agreement: kappa of a second labelling against the gold labels, and every disagreement."""
    from lpa.eval.judges.support.gold import load_gold
    from lpa.eval.judges.support.validate import (
        confusion_text,
        load_labels,
        validate_labels,
        validation_table,
    )

    rows, other = load_gold(gold, split), load_labels(str(labels))
    covered = [r for r in rows if r.id in other]
    if not covered:
        raise LpaError(f"No row of {gold} (split={split}) has an id in {labels}.")
    result = validate_labels(covered, other, name, n_boot=bootstrap)
    print(f"Gold: {gold} split={split}: {len(covered)} of {len(rows)} rows labelled in {labels}\n")
    print(validation_table([result]) + "\n\n" + confusion_text(result))
    pred = result.extra["predictions"]
    print("\nDisagreements (id: gold -> other):")
    for row, label in zip(covered, pred, strict=True):
        if label != row.label:
            print(f"  {row.id}: {row.label} -> {label}")


def sample_command(
    runs: list[Path] = typer.Argument(..., help="Eval run folders (each with generations.jsonl and config.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL of unlabelled rows to fill in (label, note)."),
    n: int = typer.Option(150, "--n", help="Rows to draw, round-robin over (method, benchmark, attack)."),
    gold: str = GoldOption,
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Benchmark data folder (default: LPA_DATA_DIR)."),
) -> None:
    """Draw a stratified set of real answers to label by reading (answers already in the gold file are skipped)."""
    from lpa.eval.judges.support.gold import load_gold, stratified_sample, unlabelled_rows
    from lpa.io import atomic_write_text

    rows = [row for run in runs for row in unlabelled_rows(run, str(data_dir) if data_dir else None)]
    picked = stratified_sample(rows, n, seed, exclude=load_gold(gold))
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked))
    print(f"{len(picked)} of {len(rows)} answers written to {out}; fill in 'label' and 'note', then `lpa judges add`.")


def add_command(
    labelled: Path = typer.Argument(..., help="JSONL of labelled rows (e.g. from `lpa judges sample`), with ids."),
    gold: Path = typer.Option(..., "--gold", "-g", help="Gold file to extend (written in place, atomically)."),
    seed: int = typer.Option(0, "--seed", help="Split seed for requests not yet in the gold file."),
) -> None:
    """Add labelled rows to a gold file: known requests keep their split, new requests are split dev/test."""
    from lpa.eval.judges.support.gold import extend_split, load_gold
    from lpa.io import atomic_write_text

    existing, new = load_gold(gold), load_gold(labelled)
    rows = extend_split(existing, new, seed=seed)
    atomic_write_text(gold, "".join(r.model_dump_json(exclude_none=False) + "\n" for r in rows))
    added = rows[len(existing):]
    print(f"Added {len(added)} rows ({sum(r.split == 'test' for r in added)} test) to {gold}: {len(rows)} rows.")


def rejudge_command(
    run: Path = typer.Argument(..., help="Eval run folder (with config.yaml and generations.jsonl)."),
    out: Path = typer.Option(..., "--out", "-o", help="New run folder for the re-judged results (the original is untouched)."),
    judge: str = typer.Option(None, "--judge", "-j", help="Comma list of response judges (default: the validated default "
                              "judge and keyword)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Benchmark data folder (default: the run's, else LPA_DATA_DIR)."),
) -> None:
    """Re-judge a run's stored answers with other judges (no model, no regeneration); `lpa compare` reads the result."""
    from lpa.eval.judges import DEFAULT_JUDGE
    from lpa.eval.rejudge import rejudge_run
    from lpa.plugins import split_specs

    specs = split_specs(judge) if judge else [DEFAULT_JUDGE, "keyword"]
    results = rejudge_run(run, specs, out, data_dir=str(data_dir) if data_dir else None, progress=True)
    n = results.meta.get("unmatched_answers", 0)
    print(f"Re-judged {run} with {', '.join(specs)} -> {out}/report.md" + (f" ({n} answers matched no sample)" if n else ""))
