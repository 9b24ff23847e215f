"""tcnsearch: latency-aware TCN architecture selection and hyperparameter search for TCNCA."""

__version__ = "0.1.0"
