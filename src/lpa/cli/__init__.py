"""The ``lpa`` command line: a Typer app whose command groups live one per module."""
