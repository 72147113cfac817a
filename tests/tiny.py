"""The tiny BERT the unit tests train (2 layers, hidden 32, no dropout)."""

from jaxprune.models import EncoderConfig

TINY_BERT = EncoderConfig(
    arch="bert",
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=16,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
