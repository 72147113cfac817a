"""Building blocks shared by the models: annotated dense layers, attention and RoPE.

Every parameter carries logical axis names (``embed``, ``heads``, ``mlp``, ``vocab``,
``positions``, ``classes``) as Flax partitioning metadata, read back with
:func:`logical_axes`; the training engine maps them onto a device mesh.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Dtype = Any

_SQRT_HALF = 0.7071067811865476


def gelu(x: jax.Array) -> jax.Array:
    """The exact GELU, ``x Φ(x)``, in the erf form transformers' PyTorch models use; XLA:CPU
    runs it faster than ``jax.nn.gelu``'s erfc form (about 4% of a MiniLM train step)."""
    return 0.5 * x * (1 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _init(initializer, axes: tuple[str | None, ...]):
    return nnx.with_partitioning(initializer, axes, eager_sharding=False)


InputTap = Callable[[jax.Array, jax.Array], None]  # (kernel value, inputs) -> None
_TAP: contextvars.ContextVar[InputTap | None] = contextvars.ContextVar("tap", default=None)


@contextlib.contextmanager
def tap_inputs(tap: InputTap) -> Iterator[None]:
    """While open, every :class:`Dense` call (traced or not) first calls ``tap(kernel,
    inputs)`` with its kernel's array and its inputs (..., n_in): how one-shot pruning
    (:func:`jaxprune.oneshot.prune`) collects each layer's calibration statistics."""
    token = _TAP.set(tap)
    try:
        yield
    finally:
        _TAP.reset(token)


class Dense(nnx.Linear):
    """``nnx.Linear`` that applies its kernel to inputs of any rank as one 2-D matmul,
    (tokens, n_in) x (n_in, n_out). With 3-D inputs XLA:CPU computes the kernel's gradient
    through a transpose and a slower dot (about 10% of a MiniLM train step)."""

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        tap = _TAP.get()
        if tap is not None:
            tap(self.kernel[...], inputs)
        if inputs.ndim <= 2 or out_sharding is not None:  # a sharding names the N-D output
            return super().__call__(inputs, out_sharding)
        tokens = math.prod(inputs.shape[:-1])  # not -1: a pruned-away layer has 0 features
        out = super().__call__(inputs.reshape(tokens, inputs.shape[-1]))
        return out.reshape(*inputs.shape[:-1], out.shape[-1])


def dense(
    n_in: int,
    n_out: int,
    axes: tuple[str | None, str | None],
    *,
    rngs: nnx.Rngs,
    dtype: Dtype = jnp.float32,
    std: float = 0.02,
    bias: bool = True,
) -> Dense:
    """A Linear layer, kernel (n_in, n_out) ~ N(0, std^2) as in BERT, zero bias (none when
    ``bias`` is False)."""
    return Dense(
        n_in,
        n_out,
        use_bias=bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_init(nnx.initializers.normal(std), axes),
        bias_init=_init(nnx.initializers.zeros_init(), (axes[1],)),
        rngs=rngs,
    )


def layer_norm(
    n: int, eps: float, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32, bias: bool = True
) -> nnx.LayerNorm:
    """LayerNorm over the last axis, scale 1 and bias 0 (no bias when ``bias`` is False)."""
    return nnx.LayerNorm(
        n,
        epsilon=eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_bias=bias,
        scale_init=_init(nnx.initializers.ones_init(), ("embed",)),
        bias_init=_init(nnx.initializers.zeros_init(), ("embed",)),
        rngs=rngs,
    )


def embed(
    n: int,
    features: int,
    axes: tuple[str | None, str],
    *,
    rngs: nnx.Rngs,
    dtype: Dtype = jnp.float32,
) -> nnx.Embed:
    return nnx.Embed(
        n,
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        embedding_init=_init(nnx.initializers.normal(0.02), axes),
        rngs=rngs,
    )


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    *,
    causal: bool = False,
    dropout: nnx.Dropout | None = None,
    deterministic: bool = True,
    rngs: nnx.Rngs | None = None,
    return_scores: bool = False,
    bias: jax.Array | None = None,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Scaled dot-product attention over heads.

    Args:
      q, k, v: (batch, length, heads, head_dim).
      mask: (batch, length) bool, True for real tokens (keys to attend to); or (batch,
        length, length), True where a query may attend to a key (see :func:`segment_mask`);
        or None.
      causal: mask future positions (GPT-2).
      dropout: attention-probability dropout, used when not deterministic.
      return_scores: also return the pre-softmax scores (batch, heads, length, length),
        padding and future positions set to the dtype's minimum as in transformers.
      bias: (batch, heads, length, length) added to the scaled scores (DeBERTa's relative
        position terms), or None.
      scale: the scores' factor; None: ``1 / sqrt(head_dim)``.

    Returns:
      (context of shape (batch, length, heads, head_dim), scores or None).
    """
    drop = dropout if dropout is not None and dropout.rate > 0 and not deterministic else None
    if mask is not None:  # to (batch, 1, q or 1, k)
        mask = mask.astype(bool)
        mask = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
    if not (return_scores or drop is not None):
        if bias is not None:
            bias = bias.astype(q.dtype)
        out = jax.nn.dot_product_attention(
            q, k, v, bias=bias, mask=mask, scale=scale, is_causal=causal
        )
        return out, None
    depth = q.shape[-1]
    # heads-major, so both contractions are plain batched matmuls (faster on XLA:CPU)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
    scores = scores / jnp.sqrt(depth) if scale is None else scores * scale
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    allowed = jnp.ones(scores.shape[-2:], bool)
    if causal:
        allowed = jnp.tril(allowed)
    allowed = allowed[None, None]
    if mask is not None:
        allowed = allowed & mask
    scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    if drop is not None:
        probs = drop(probs, deterministic=False, rngs=rngs)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v).transpose(0, 2, 1, 3)
    return out, scores if return_scores else None


def rope_frequencies(theta: float, head_dim: int) -> np.ndarray:
    """(head_dim // 2,) float32 RoPE inverse frequencies ``theta ** (-2i / head_dim)``,
    computed in float32 like transformers, so angles agree to the last bit or two."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    return np.float32(1.0) / np.float32(theta) ** exponents


def rotate(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """RoPE as transformers' ``rotate_half``: ``x`` (batch, length, heads, head_dim) at
    ``positions`` (batch or 1, length) int; same shape out."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # (batch, length, d/2)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    return x * cos + jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin


def segment_mask(segment_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """(batch, length, length) bool: a query attends to a key of its own segment.

    ``segment_ids`` (batch, length) int numbers the examples packed into a row from 1, 0 on
    padding; an optional ``attention_mask`` (batch, length) also drops keys marked 0.
    """
    keys = segment_ids[:, None, :]
    allowed = (segment_ids[:, :, None] == keys) & (keys > 0)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :].astype(bool)
    return allowed


def first_tokens(x: jax.Array, cls_positions: jax.Array | None = None) -> jax.Array:
    """The first token of every sequence: (batch, hidden) from ``x`` (batch, length, hidden),
    or, for packed rows, (batch, S, hidden) at ``cls_positions`` (batch, S) int."""
    if cls_positions is None:
        return x[:, 0]
    return jnp.take_along_axis(x, cls_positions[..., None].astype(jnp.int32), axis=1)


def logical_axes(module: nnx.Module) -> dict:
    """Pure-dict tree (like the params) of ``PartitionSpec`` objects of logical axis names."""
    specs = nnx.get_partition_spec(nnx.state(module, nnx.Param))
    return nnx.to_pure_dict(specs)


__all__ = [
    "ACTIVATIONS",
    "Dense",
    "Dtype",
    "InputTap",
    "activation",
    "attention",
    "dense",
    "embed",
    "first_tokens",
    "gelu",
    "layer_norm",
    "logical_axes",
    "rope_frequencies",
    "rotate",
    "segment_mask",
    "tap_inputs",
]
