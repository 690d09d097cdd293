"""Evaluation of generated samples: molecules (RDKit metrics); ``proseco eval`` lives in ``cli``."""

from proseco.eval.molecules import (
    MOLECULE_PROPERTIES,
    canonicalize,
    molecule_metrics,
    property_values,
)

__all__ = ["MOLECULE_PROPERTIES", "canonicalize", "molecule_metrics", "property_values"]
