"""Flax NNX models of the BERT family and GPT-2 whose parameter paths are checkpoint keys."""

from jaxprune.models.encoder import ARCHITECTURES, Encoder, EncoderConfig, EncoderOutput
from jaxprune.models.gpt2 import GPT2Config, GPT2LMHeadModel, generate_greedy
from jaxprune.models.heads import TASKS, EncoderForTask, Output
from jaxprune.models.layers import logical_axes

__all__ = [
    "ARCHITECTURES",
    "TASKS",
    "Encoder",
    "EncoderConfig",
    "EncoderForTask",
    "EncoderOutput",
    "GPT2Config",
    "GPT2LMHeadModel",
    "Output",
    "generate_greedy",
    "logical_axes",
]
