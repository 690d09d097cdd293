"""Evaluation of generated samples: molecule metrics (``molecules``) and the QM9 sampler study
(``study``).

The RDKit helpers they build on live in :mod:`proseco.chem`; the ``proseco eval`` command in
:mod:`proseco.commands.eval`.
"""

from proseco.eval.molecules import fcd, molecule_metrics

__all__ = ["fcd", "molecule_metrics"]
