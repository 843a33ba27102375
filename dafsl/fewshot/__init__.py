"""Few-shot learning: character sets and episodes (:mod:`dafsl.fewshot.data`); the
learners of seed 000 (Siamese, Matching and Prototypical networks) behind one
easyfsl-style interface (:mod:`dafsl.fewshot.base`), their episodic training and
evaluation (:mod:`dafsl.fewshot.episodic`), seed 000's self-distillation
(:mod:`dafsl.fewshot.distill`) and the ``python -m dafsl.fewshot`` command
(:mod:`dafsl.fewshot.run`). See docs/fewshot.md."""
