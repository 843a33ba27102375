"""Embedded procedural datasets, as pure renderers (no file IO).

* :mod:`dafsl.synth.faces`  -- "synthfaces": face scenes with box, gender and identity
  annotations, overlapping gender cues with a known Bayes accuracy (~93%).
* :mod:`dafsl.synth.shapes` -- the source-domain dataset: textured geometric shapes
  with boxes, for pretraining; deliberately not faces.
"""
from dafsl.synth import faces, shapes

__all__ = ["faces", "shapes"]
