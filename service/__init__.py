"""clusterbench: scikit-learn's K-Means digits benchmark as a REST service."""

__version__ = "0.1.0"
