"""musicdecomp: a reproducible pipeline for unsupervised decomposition of music audio."""

__version__ = "0.1.0"
