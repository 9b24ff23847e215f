"""Models: TCNCA and the MEGA baseline (one gated layer, two mixers), TCNCA-simple, TCN-MLP.

Modules: config (ModelConfig, TCNConfig), layers (the gated layer and the blocks), model (the whole
model and its heads), memory (a model's parameters and activations, counted from its config).
"""

from tcnsearch.models.config import ModelConfig, TCNConfig
from tcnsearch.models.layers import FeedForward, MegaLayer, MixerBlock, SimpleBlock
from tcnsearch.models.memory import activation_elements, mixer_elements, num_parameters
from tcnsearch.models.model import SequenceModel, build_model

__all__ = ["FeedForward", "MegaLayer", "MixerBlock", "ModelConfig", "SequenceModel", "SimpleBlock", "TCNConfig",
           "activation_elements", "build_model", "mixer_elements", "num_parameters"]
