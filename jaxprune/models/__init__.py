"""Flax NNX models (BERT family, DeBERTa-v2, ModernBERT, GPT-2, Llama / Qwen2 / Mistral)
whose parameter paths are checkpoint keys."""

from jaxprune.models.deberta import DebertaV2Config, DebertaV2ForTask
from jaxprune.models.encoder import ARCHITECTURES, Encoder, EncoderConfig, EncoderOutput
from jaxprune.models.gpt2 import GPT2Config, GPT2LMHeadModel, generate_greedy
from jaxprune.models.heads import TASKS, EncoderForTask, Output
from jaxprune.models.layers import logical_axes
from jaxprune.models.llama import LlamaConfig, LlamaForCausalLM
from jaxprune.models.modernbert import ModernBertConfig, ModernBertForTask

__all__ = [
    "ARCHITECTURES",
    "TASKS",
    "DebertaV2Config",
    "DebertaV2ForTask",
    "Encoder",
    "EncoderConfig",
    "EncoderForTask",
    "EncoderOutput",
    "GPT2Config",
    "GPT2LMHeadModel",
    "LlamaConfig",
    "LlamaForCausalLM",
    "ModernBertConfig",
    "ModernBertForTask",
    "Output",
    "generate_greedy",
    "logical_axes",
]
