"""Embedded procedural datasets, as pure renderers (no file IO).

* :mod:`dafsl.synth.faces`  -- "synthfaces": face scenes with box, gender and identity
  annotations, overlapping gender cues with a known Bayes accuracy (~93%).
* :mod:`dafsl.synth.shapes` -- the source-domain dataset: textured geometric shapes
  with boxes, for pretraining; deliberately not faces.
* :mod:`dafsl.synth.glyphs` -- "glyphs": an Omniglot-like set of stroke-drawn characters
  (alphabets x characters x 20 drawers) for few-shot learning.
"""
from dafsl.synth import faces, shapes

__all__ = ["faces", "shapes"]
