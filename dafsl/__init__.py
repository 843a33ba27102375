"""dafsl: DA-FSL (data-augmentation-based few-shot learning) for face gender, with
knowledge transfer in every stage (detector, augmenter, classifier)."""

__version__ = "0.1.0"
