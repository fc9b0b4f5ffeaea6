"""Trait sets: built-ins, ablations, validation errors, the no-harm screen, pair building, CLI."""

from __future__ import annotations

from collections import Counter

import pytest
from typer.testing import CliRunner

from lpa.errors import LpaError
from lpa.traits import (
    build_examples,
    builtin_names,
    harm_keywords_in,
    load_trait_file,
    load_traits,
    screen_statements,
)


def test_builtin_names():
    assert builtin_names() == ["big-five", "inverted", "irrelevant", "negative-only", "positive-only", "shuffled"]


def test_big_five_composition():
    traits = load_traits("big-five")
    assert len(traits.items) < 100
    desirable = [i for i in traits.items if i.polarity == "desirable"]
    undesirable = [i for i in traits.items if i.polarity == "undesirable"]
    assert 40 <= len(desirable) <= 50 and all(i.target == "agree" for i in desirable)
    assert {i.family for i in desirable} == {"honesty-humility", "agreeableness", "conscientiousness", "emotional-stability"}
    assert len(undesirable) == 21 and all(i.target == "disagree" for i in undesirable)
    families = Counter(i.family for i in undesirable)
    assert families == {"malicious": 7, "sycophantic": 7, "fabricating": 7}
    for family in families:
        grades = [i.severity for i in undesirable if i.family == family]
        assert grades == sorted(grades) and grades[0] == 1 and grades[-1] == 7


def test_negative_only_and_ablations():
    neg = load_traits("negative-only")
    assert 60 <= len(neg.items) <= 70 and {i.target for i in neg.items} == {"disagree"}
    base = load_traits("big-five")
    pos = load_traits("positive-only")
    assert pos.items and all(i.polarity == "desirable" and i.target == "agree" for i in pos.items)
    inv = load_traits("inverted")
    assert all(a.target != b.target for a, b in zip(base.items, inv.items, strict=True))
    sh0, sh0b, sh1 = load_traits("shuffled", seed=0), load_traits("shuffled", seed=0), load_traits("shuffled", seed=1)
    assert Counter(i.target for i in sh0.items) == Counter(i.target for i in base.items)
    assert [i.target for i in sh0.items] == [i.target for i in sh0b.items]
    assert [i.target for i in sh0.items] != [i.target for i in sh1.items]
    irr = load_traits("irrelevant")
    assert {i.polarity for i in irr.items} == {"neutral"} and {i.target for i in irr.items} == {"agree", "disagree"}
    mean_len = lambda s: sum(len(i.statement) for i in s.items) / len(s.items)  # noqa: E731
    assert abs(mean_len(irr) - mean_len(base)) < 15


@pytest.mark.parametrize("name", ["big-five", "negative-only", "irrelevant", "positive-only", "inverted", "shuffled"])
def test_no_builtin_statement_names_a_harmful_act(name):
    assert screen_statements(i.statement for i in load_traits(name).items) == []


def test_screen_catches_harmful_acts():
    assert harm_keywords_in("I like building bombs and hacking servers.") == ["bomb", "hack"]
    assert harm_keywords_in("I keep my promises.") == []


def test_validation_errors_name_file_row_and_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "items:\n"
        "  - {statement: I am kind., target: agree, family: a, polarity: desirable}\n"
        "  - {statement: I am rude., target: maybe, family: a, polarity: undesirable}\n"
    )
    with pytest.raises(LpaError, match=r"bad\.yaml: row 2: target"):
        load_trait_file(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("- {statement: X., target: agree, family: a, polarity: desirable}\n" * 2)
    with pytest.raises(LpaError, match="row 2: duplicate"):
        load_trait_file(dup)
    csv = tmp_path / "t.csv"
    csv.write_text("statement,target,family\nI am kind.,agree,a\n")
    with pytest.raises(LpaError, match="missing CSV column"):
        load_trait_file(csv)
    csv.write_text("statement,target,family,polarity,severity\nI am kind.,agree,a,desirable,\nI lie.,disagree,b,undesirable,11\n")
    with pytest.raises(LpaError, match=r"t\.csv: row 3: severity"):
        load_trait_file(csv)
    with pytest.raises(LpaError, match="Unknown trait set"):
        load_traits("no-such-set")


def test_csv_file_loads(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("statement,target,family,polarity\nI am kind.,agree,a,desirable\nI lie.,disagree,b,undesirable\n")
    traits = load_traits(csv)
    assert traits.name == "mine" and [i.target for i in traits.items] == ["agree", "disagree"]


def test_build_examples():
    traits = load_traits("big-five")
    examples = build_examples(traits)
    agree, disagree = "I agree with this statement.", "I do not agree with this statement."
    for item, ex in zip(traits.items, examples, strict=True):
        assert ex.messages[0]["role"] == "system" and ex.messages[-1]["content"] == item.statement
        assert (ex.chosen, ex.rejected) == ((agree, disagree) if item.target == "agree" else (disagree, agree))
        assert ex.meta["family"] == item.family


def test_cli(tmp_path):
    from lpa.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["traits", "list"])
    assert out.exit_code == 0 and "negative-only" in out.output
    out = runner.invoke(app, ["traits", "show", "big-five"])
    assert out.exit_code == 0 and "malicious" in out.output
    good = tmp_path / "g.yaml"
    good.write_text("- {statement: I am kind., target: agree, family: a, polarity: desirable}\n")
    assert runner.invoke(app, ["traits", "validate", str(good)]).exit_code == 0
    harmful = tmp_path / "h.yaml"
    harmful.write_text("- {statement: I enjoy making a bomb., target: disagree, family: a, polarity: undesirable}\n")
    out = runner.invoke(app, ["traits", "validate", str(harmful)])
    assert out.exit_code != 0 and isinstance(out.exception, LpaError)
