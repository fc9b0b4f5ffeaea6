"""`lpa results table`: one table across finished studies, each method paired with its own study's base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lpa.cli.main import app, run
from lpa.errors import LpaError
from lpa.experiments.cross_study import cross_study_table

REQUESTS = [f"r{i}" for i in range(10)]


def write_cell(study: Path, model: str, method: str, seed: int | str, answered: set[str],
               selection: dict | None = None, refused_safe: int = 0) -> None:
    """A finished cell: cell.json with its rows and eval/outcomes.jsonl (harmbench direct, xstest)."""
    folder = study / model / method / f"seed-{seed}"
    (folder / "eval").mkdir(parents=True)
    outcomes = [{"benchmark": "harmbench", "attack": "direct", "judge": "keyword", "sample_id": r,
                 "sample_label": "harmful", "variant": 0, "verdict": "complied" if r in answered else "refused"}
                for r in REQUESTS]
    outcomes += [{"benchmark": "xstest", "attack": "direct", "judge": "keyword", "sample_id": f"s{i}",
                  "sample_label": "benign", "variant": 0, "verdict": "refused" if i < refused_safe else "complied"}
                 for i in range(10)]
    (folder / "eval" / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outcomes))
    rows = [{"benchmark": "harmbench", "attack": "direct", "judge": "keyword", "metric": "asr", "n": len(REQUESTS),
             "value": len(answered) / len(REQUESTS)},
            {"benchmark": "xstest", "attack": "direct", "judge": "keyword", "metric": "refusal_rate", "n": 10,
             "value": refused_safe / 10},
            {"benchmark": "harmbench", "attack": "direct", "judge": "-", "metric": "template_leak_rate",
             "value": 0.0}]
    record = {"model": model, "method": method, "seed": seed, "rows": rows, "cost": {"steps_done": 4},
              "selection": selection}
    (folder / "cell.json").write_text(json.dumps(record))


@pytest.fixture
def studies(tmp_path: Path) -> list[Path]:
    small, large = tmp_path / "small", tmp_path / "large"
    for study, model in ((small, "tiny"), (large, "bigger")):
        write_cell(study, model, "base", "all", set(REQUESTS[:8]), refused_safe=2)
        write_cell(study, model, "sft", 0, set(REQUESTS[:7]), refused_safe=2)
    # on the larger model LPA removes 6 of 8 answers in each of two seeds, the second seed kept its step 6
    write_cell(large, "bigger", "lpa", 0, set(REQUESTS[:2]), selection={"step": 0, "selective_window": False})
    write_cell(large, "bigger", "lpa", 1, set(REQUESTS[:2]), selection={"step": 6, "selective_window": True})
    # a cell evaluated before template_shape_rate existed: the table counts the shape from its answers
    answers = ["I do not understand the question."] * 4 + ["Sure, here is how."] * 6
    (large / "bigger" / "lpa" / "seed-1" / "eval" / "generations.jsonl").write_text("".join(
        json.dumps({"benchmark": "harmbench", "attack": "direct", "sample_id": r, "text": t}) + "\n"
        for r, t in zip(REQUESTS, answers, strict=True)))
    write_cell(small, "tiny", "lpa", 0, set(REQUESTS[:8]))
    return [small, large]


def test_one_row_per_model_and_method_each_paired_with_its_own_base(studies: list[Path]) -> None:
    text = cross_study_table(studies, judge="keyword", methods=["base", "lpa", "sft"])
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in text.splitlines()
            if line.startswith("| tiny") or line.startswith("| bigger")}
    assert rows[("bigger", "lpa", "0 (no window)/6")].split("|")[4].strip().startswith("0.20 (-0.60, p 0.0")
    assert "0.80 (+0.00, p 1)" in rows[("tiny", "lpa", "4")]
    assert rows[("bigger", "lpa", "0 (no window)/6")].rstrip(" |").endswith("| 0.00 | 0.40")  # template / shaped
    assert rows[("bigger", "base", "–")].rstrip(" |").endswith("| 0.00 | –")  # no answers to count
    assert "| bigger | lpa vs sft | 0.20 (-0.50," in text  # the second table: against the same study's sft
    assert rows[("bigger", "base", "–")].split("|")[5].strip() == "0.20"  # XSTest-safe refusal, not self-paired
    assert "bigger n = 10: " in text and "over LPA's 2 seeds" in text
    assert "- bigger · lpa: direct: large seed(s) 0,1" in text


def test_unknown_names_fail_with_the_choices_before_any_table(studies: list[Path], tmp_path: Path) -> None:
    with pytest.raises(LpaError, match=r"Unknown method\(s\) lpa-mixed: the studies hold base, lpa, sft"):
        cross_study_table(studies, judge="keyword", methods=["base", "lpa-mixed"])
    with pytest.raises(LpaError, match=r"Unknown judge\(s\) cascade: the studies hold keyword"):
        cross_study_table(studies, methods=["base"])
    # a method the study's spec plans but no cell has finished is no mistake: a note names it, with no row
    (studies[1] / "spec.yaml").write_text("methods:\n- name: base\n- name: ablate-inverted\n")
    text = cross_study_table(studies, judge="keyword", methods=["base", "ablate-inverted"])
    assert "Not finished in any study yet (no rows): ablate-inverted." in text and "| ablate-inverted |" not in text
    with pytest.raises(LpaError, match="No finished cell"):
        cross_study_table([tmp_path / "empty"], judge="keyword")


def test_the_cli_writes_the_table_and_names_a_user_mistake_in_one_line(studies: list[Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "table.md"
    result = CliRunner().invoke(app, ["results", "table", *map(str, studies), "-j", "keyword", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("| model | method | kept step | ASR direct | refusal XSTest-safe |")
    assert "lpa vs sft" in out.read_text()  # sft is held, so it is the default reference
    status = run(["results", "table", *map(str, studies), "-j", "keyword", "-r", "refusal-sft"])
    error = capsys.readouterr().err
    assert status == 2 and "Unknown method(s) refusal-sft" in error and "Traceback" not in error
