"""Issue 25 §5: `lpa compare A B --answers` puts the discordant answers side by side; `lpa attacks list` reads."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lpa.cli.main import app


def _run(folder, model, verdicts):
    """A run folder as `lpa eval` leaves it: outcomes, generations (of two models), results meta."""
    folder.mkdir(parents=True)
    outcomes, gens = [], []
    for sid, (label, verdict, text) in verdicts.items():
        outcomes.append({"benchmark": "toy", "attack": "direct", "judge": "keyword", "sample_id": sid,
                         "sample_label": label, "variant": 0, "verdict": verdict})
        for who in (model, "someone-else"):
            gens.append({"benchmark": "toy", "attack": "direct", "sample_id": sid, "variant": 0, "model": who,
                         "adapter": None, "messages": [{"role": "user", "content": f"request {sid} | x"}],
                         "text": text if who == model else "WRONG MODEL"})
    (folder / "outcomes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in outcomes))
    (folder / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gens))
    (folder / "results.json").write_text(json.dumps({"meta": {"model": model, "adapter": None}, "rows": []}))
    return folder


def test_compare_answers_writes_the_discordant_pairs_side_by_side(tmp_path):
    a = _run(tmp_path / "base", "m-a", {"s1": ("harmful", "complied", "Sure, step 1\nstep 2"),
                                        "s2": ("harmful", "refused", "No."),
                                        "s3": ("benign", "complied", "Here you go.")})
    b = _run(tmp_path / "lpa", "m-b", {"s1": ("harmful", "refused", "I can't help with that."),
                                       "s2": ("harmful", "refused", "No way."),
                                       "s3": ("benign", "refused", "I won't.")})
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--answers", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cmp" / "answers.md").read_text()
    assert "toy / direct / judge keyword: 2 discordant" in text
    assert "s2" not in text  # both refused: concordant
    row = next(line for line in text.splitlines() if line.startswith("| s1"))
    assert "**answered**<br>Sure, step 1<br>step 2" in row and "**refused**<br>I can't help with that." in row
    assert "request s1 \\| x" in row  # the pipe cannot break the table
    assert "WRONG MODEL" not in text  # only the answers of the model each run evaluated
    benign = next(line for line in text.splitlines() if line.startswith("| s3"))
    assert "**answered**<br>Here you go." in benign and "**refused**<br>I won't." in benign


def test_attacks_list_is_readable_and_complete():
    from lpa.eval.attacks import ATTACKS

    result = CliRunner().invoke(app, ["attacks", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.output  # nothing truncated at 80 columns
    for name, cls in ATTACKS.items():
        assert f"\n{name}  (" in "\n" + result.output
        for arg in cls.Args.model_fields:
            assert f"{arg} = " in result.output
    listed = json.loads(CliRunner().invoke(app, ["attacks", "list", "--json"]).output)
    assert {e["name"] for e in listed} == set(ATTACKS)
    pair = next((e for e in listed if e["name"] == "pair"), None)
    if pair is not None:
        assert "attacker_model" in pair["args"]
