"""Persona vectors (Chen et al. 2025): extract, steer, monitor, screen data, preventative fine-tuning.

Heavy submodules import torch; this package root only exposes the artefact type and loader.
"""

from lpa.persona.vector import PersonaVector, load_vector

__all__ = ["PersonaVector", "load_vector"]
