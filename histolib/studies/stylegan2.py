"""The ``stylegan2`` params section: options of the StyleGAN2-ADA training of notebook 03 (seed 002).

The options are declared once, with their help texts and ranges, as
:class:`histolib.train.stylegan2.StyleGAN2Options`, which the trainer consumes directly; this module only
registers that class as the schema of ``params.yaml``'s ``stylegan2`` block (``params.stylegan2`` is then a
``StyleGAN2Options``). Registering it again elsewhere (e.g. from ``histolib.studies.datasetgan``) is a no-op.
"""

from histolib.config import section
from histolib.train.stylegan2 import StyleGAN2Options

section("stylegan2")(StyleGAN2Options)

__all__ = ["StyleGAN2Options"]
