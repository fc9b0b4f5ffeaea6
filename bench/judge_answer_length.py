"""Does a judge's κ on an attack family hold when answers are cut to the demo's ``max_new_tokens``?

Run: .venv/bin/python bench/judge_answer_length.py [--attack in-the-wild] [--judge cascade] [--tokens 32 48 64]
         [--split test] [--model qwen2.5-coder-0.5b]

The shipped gold answers of a family (e.g. in-the-wild: generated at 96 new tokens) are cut to the first
N tokens of the model's tokenizer and judged again; κ (complied vs not, what ASR rests on) is measured
against the labels of the whole answers.  So the figure mixes the judge's error with answers whose label
would change if they went on (a role accepted in 48 tokens, the harmful part after it): it says how far an
ASR read at N tokens may be from the one at the labelled length, which is what choosing N for a demo needs.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", default="in-the-wild")
    parser.add_argument("--judge", default="cascade")
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--split", default="test", help="gold split: test, dev or all")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="tokenizer that counts the answer's tokens")
    args = parser.parse_args()

    from lpa.errors import LpaError
    from lpa.eval.judges.support.gold import load_gold
    from lpa.eval.judges.support.validate import validate_judge
    from lpa.models.loader import load_tokenizer

    rows = [r for r in load_gold(split=None if args.split == "all" else args.split) if r.attack == args.attack]
    if not rows:
        raise LpaError(f"No gold answers of attack {args.attack!r} in split {args.split!r}.")
    tokenizer = load_tokenizer(args.model)
    lengths = [tokenizer(r.answer, add_special_tokens=False)["input_ids"] for r in rows]
    print(f"{args.attack}, {args.split} split: {len(rows)} labelled answers, judge {args.judge}")
    for limit in [None, *sorted(args.tokens)]:
        if limit is None:
            cut, longer = rows, 0
        else:
            cut = [r.model_copy(update={"answer": tokenizer.decode(ids[:limit])}) if len(ids) > limit else r
                   for r, ids in zip(rows, lengths, strict=True)]
            longer = sum(len(ids) > limit for ids in lengths)
        k = validate_judge(args.judge, cut).kappa_binary
        label = "whole answers (as labelled)" if limit is None else f"cut to {limit} tokens ({longer} answers cut)"
        print(f"  {label:42s} κ complied-vs-not {k.value:.2f} [{k.ci_low:.2f}, {k.ci_high:.2f}]", flush=True)


if __name__ == "__main__":
    main()
