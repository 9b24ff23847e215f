"""Models: TCNCA and the MEGA baseline (one gated layer, two mixers), TCNCA-simple, TCN-MLP."""

from tcnsearch.models.model import (
    FeedForward,
    MegaLayer,
    ModelConfig,
    SequenceModel,
    TCNConfig,
    build_model,
)

__all__ = ["FeedForward", "MegaLayer", "ModelConfig", "SequenceModel", "TCNConfig", "build_model"]
