"""Few-shot learning: character sets and episodes (:mod:`dafsl.fewshot.data`), methods."""
