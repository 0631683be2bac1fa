"""ubsafe: benchmark image safety classifiers for effectiveness and robustness, at cluster scale."""

__version__ = "0.1.0"
