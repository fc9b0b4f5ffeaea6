"""Entry point of the ``lpa`` console script.

Each module in :data:`COMMAND_MODULES` exposes ``register(app)`` and adds its commands or
sub-apps; heavy imports stay inside the command functions so ``lpa --help`` is instant.
User mistakes raise :class:`~lpa.errors.LpaError` and are printed as one line, exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from lpa.errors import LpaError

COMMAND_MODULES = [
    "lpa.cli.models",
    "lpa.cli.assets",
    "lpa.cli.traits",
    "lpa.cli.train",
    "lpa.cli.eval",
    "lpa.cli.judges",
    "lpa.cli.attacks",
    "lpa.cli.persona",
    "lpa.cli.experiment",
    "lpa.cli.results",
]

app = typer.Typer(
    name="lpa",
    help="Latent Personality Alignment: align a model's personality, then red-team it honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs and full tracebacks."),
) -> None:
    import logging
    import os

    from lpa.progress import line_interval

    line_interval()  # a malformed LPA_PROGRESS_EVERY is a clear error now, not at the first bar of a long run
    if verbose:
        os.environ["LPA_VERBOSE"] = "1"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars (we show ours)
        if not sys.stderr.isatty():
            # Libraries that call tqdm directly (transformers' GGUF de-quantisation) would smear carriage-return
            # frames through a job's log; off a terminal lpa's own timestamped lines report progress instead.
            os.environ.setdefault("TQDM_DISABLE", "1")
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
INTERRUPTED = "Interrupted; finished work is saved and a rerun resumes."


def main() -> None:
    """Run the app and exit with a status that tells the truth.

    0 success; 1 a run whose numbers should not be trusted (judge errors); 2 a user mistake
    (:class:`LpaError`, usage), printed as one line; 130 Ctrl-C, with a message.  Under
    ``standalone_mode=False`` click *returns* ``typer.Exit`` codes (and Ctrl-C as 130) instead
    of exiting, so the value is passed on here.
    """
    sys.exit(run())


def _is_usage_error(exc: Exception) -> bool:
    """A click usage error (bad option, missing argument): click's own class or the one typer vendors."""
    import click

    vendored = getattr(getattr(typer, "_click", None), "ClickException", click.ClickException)
    return isinstance(exc, (click.ClickException, vendored))


def run(args: list[str] | None = None) -> int:
    """The exit status of ``lpa ARGS`` (the console script's body, callable in-process)."""
    import os

    try:
        status = app(args=args, standalone_mode=False)
    except LpaError as exc:
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(f"[bold red]Error:[/] {exc}", highlight=False)
        if os.environ.get("LPA_VERBOSE"):
            raise
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except typer.Abort:  # EOF on a prompt
        print("Aborted.", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if _is_usage_error(exc):
            # _is_usage_error checked that this is Click's UsageError (show/exit_code); mypy cannot see that
            exc.show()  # type: ignore[attr-defined]
            return int(exc.exit_code)  # type: ignore[attr-defined]
        raise
    status = status if isinstance(status, int) else EXIT_OK  # a command's return value is not a status
    if status == EXIT_INTERRUPTED:
        print(INTERRUPTED, file=sys.stderr)
    return status


if __name__ == "__main__":
    main()
