"""Analyses the LPA paper was asked for: semantic overlap between training and evaluation data."""

from lpa.analysis.overlap import OverlapStats, SentenceEmbedder, semantic_overlap

__all__ = ["OverlapStats", "SentenceEmbedder", "semantic_overlap"]
