"""Stage 2 of DA-FSL: the GAN augmenter (PG-GAN generator, DC-GAN discriminator) that
learns the scarce Dlack class from its few real faces and fills it with generated ones.

Files: ``networks.py`` (G, D), ``loss.py`` (BCE), ``diffaug.py`` (DiffAugment),
``trainer.py`` (growth, D+G steps, EMA), ``data.py`` (face crops), ``quality.py``
(KID, precision/recall), ``featnet.py`` (the metrics' feature network, a zoo entry), ``reference.py`` (crops cut like the GAN's, snapshot selection), ``degrade.py`` (the scene degradation chain), ``probe.py`` (real-vs-generated probe),
``samples.py`` (grids, generated faces), ``zoo.py`` (the source GAN zoo entry),
``train.py`` (the stage's ``run``).
"""
