"""Reports from results files: markdown tables, side-by-side comparisons, matplotlib plots (Agg)."""

from lpa.report.tables import aggregate, compare, load_results, render_report, write_report

__all__ = ["aggregate", "compare", "load_results", "render_report", "write_report"]
