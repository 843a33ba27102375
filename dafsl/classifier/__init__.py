"""Stage 3 of DA-FSL: the gender classifier.

It trains a timm backbone on face crops (Denough male faces cropped by the BDRP
detector, plus the Dlack female faces: the few real ones and the augmenter's
generated faces), optionally distilled from a teacher (:mod:`dafsl.classifier.distill`),
and scores both the classifier alone (:mod:`dafsl.classifier.metrics`) and the whole
chain as a two-class detector (:mod:`dafsl.classifier.system_eval`).
"""
