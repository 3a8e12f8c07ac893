"""histolib: models and ops of the histolib study (synthetic data for histopathology segmentation).

Layering (imports point one way): ``ops`` imports nothing of histolib; ``data``, ``models`` and
``metrics`` may import ``ops``; ``train`` may import all of those; ``studies``, ``viz`` and ``cli``
sit on top. Notebooks import histolib, never the other way round.
"""

__version__ = "0.1.0"
