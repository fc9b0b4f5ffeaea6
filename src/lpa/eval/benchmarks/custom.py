"""Any user JSONL/CSV/JSON/TXT file, with a column mapping."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from lpa.errors import LpaError
from lpa.eval.benchmarks.base import Benchmark, BenchmarkArgs, column, register_benchmark
from lpa.io import read_table
from lpa.records import Sample


class FileArgs(BenchmarkArgs):
    path: str = Field(..., description="The file (.jsonl, .csv, .json or .txt).")
    prompt_column: str = Field("prompt", description="Column holding the request.")
    id_column: str | None = Field(None, description="Column holding a sample id (default: row number).")
    category_column: str | None = Field(None, description="Column holding a category.")
    label: Literal["harmful", "benign"] | None = Field("harmful", description="Label of every row (if no label_column).")
    label_column: str | None = Field(None, description="Column holding harmful/benign (also unsafe/safe, 1/0).")
    name: str | None = Field(None, description="Benchmark name in results (default: the file stem).")


_LABELS = {"harmful": "harmful", "unsafe": "harmful", "1": "harmful", "true": "harmful",
           "benign": "benign", "safe": "benign", "0": "benign", "false": "benign"}


@register_benchmark
class FileBenchmark(Benchmark[FileArgs]):
    name = "file"
    description = "A user JSONL/CSV file: file:path=my.jsonl,prompt_column=text,label=benign."

    def samples(self) -> list[Sample]:
        args = self.args
        path = Path(args.path).expanduser()
        if not path.is_file():
            raise LpaError(f"Benchmark file not found: {path}")
        bench = args.name or path.stem
        out = []
        for i, row in enumerate(read_table(path)):
            where = f"{path}: row {row.get('line', i + 1)}"
            if args.label_column:
                raw = str(column(row, [args.label_column], where)).strip().lower()
                if raw not in _LABELS:
                    raise LpaError(f"{where}: label {raw!r} is not one of {sorted(_LABELS)}.")
                label = _LABELS[raw]
            elif args.label is None:
                raise LpaError("Give label= or label_column= for a file benchmark.")
            else:
                label = args.label
            prompt = column(row, [args.prompt_column], where)
            if not isinstance(prompt, str):
                raise LpaError(f"{where}: {args.prompt_column!r} must be text, got {prompt!r}.")
            out.append(
                Sample(
                    id=_sample_id(row, args.id_column, where) if args.id_column else f"{bench}_{i}",
                    benchmark=bench,
                    prompt=prompt,
                    category=str(row[args.category_column]) if args.category_column and row.get(args.category_column) else None,
                    label=label,
                )
            )
        if not out:
            raise LpaError(f"{path}: no rows.")
        repeated = sorted(i for i, n in Counter(s.id for s in out).items() if n > 1)
        if repeated:  # verdicts are keyed by id: two rows with one id would collapse into one
            raise LpaError(f"{path}: duplicate ids in {args.id_column!r}: {', '.join(repeated[:10])}"
                           f"{' ...' if len(repeated) > 10 else ''}.")
        return out


def _sample_id(row: dict[str, object], id_column: str, where: str) -> str:
    value = row.get(id_column)
    if value is None or value == "" or isinstance(value, (dict, list)):
        raise LpaError(f"{where}: no id in column {id_column!r} (columns: {', '.join(sorted(row))}).")
    return str(value)
