"""hposvc: Ray-native hyperparameter optimisation."""

__version__ = "0.1.0"
