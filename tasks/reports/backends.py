"""Which parser reads the reports: the rule parser (offline default) or RadGraph from local weights."""

from __future__ import annotations

from collections.abc import Sequence

from cxrsynth.tasks.params import ParseReportsParams
from cxrsynth.tasks.reports.records import FindingState


def parse_texts(
    texts: Sequence[str | None], settings: ParseReportsParams, device: str = "cpu", progress: bool = True
) -> list[dict[str, FindingState]]:
    """Per report, its findings as the configured backend reads them."""
    if settings.backend == "rules":
        from cxrsynth.tasks.reports.rules import parse_reports

        return parse_reports(texts, progress=progress)
    if settings.backend == "radgraph":
        from cxrsynth.tasks.reports.radgraph_backend import load_radgraph, parse_reports_radgraph

        options = settings.radgraph
        model = load_radgraph(options.model_type, options.model_cache_dir, options.batch_size, device)
        return parse_reports_radgraph(texts, model, options.batch_size, progress=progress)
    raise ValueError(f"parse_reports.backend must be 'rules' or 'radgraph', got {settings.backend!r}")
