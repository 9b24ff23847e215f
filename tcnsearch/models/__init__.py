"""Models: TCNCA and the MEGA baseline (one gated layer, two mixers), TCNCA-simple, TCN-MLP.

Modules: config (ModelConfig, TCNConfig), layers (the gated layer and the blocks), model (the whole
model and its heads).
"""

from tcnsearch.models.config import ModelConfig, TCNConfig
from tcnsearch.models.layers import FeedForward, MegaLayer, MixerBlock, SimpleBlock
from tcnsearch.models.model import SequenceModel, build_model

__all__ = ["FeedForward", "MegaLayer", "MixerBlock", "ModelConfig", "SequenceModel", "SimpleBlock", "TCNConfig",
           "build_model"]
