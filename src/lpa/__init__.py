"""lpa: Latent Personality Alignment and honest red-team evaluation for open-weight LLMs.

Heavy submodules (torch, transformers) are imported lazily so `lpa --help` stays instant.
"""

from lpa.errors import LpaError

__version__ = "0.1.0"
__all__ = ["LpaError", "__version__"]
