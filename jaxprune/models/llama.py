"""Llama-family decoder LMs in Flax NNX (Llama, Qwen2, Mistral), laid out like transformers'
``<Arch>ForCausalLM``.

Paths read like the checkpoint: ``model/layers/0/self_attn/q_proj/kernel`` is
``model.layers.0.self_attn.q_proj.weight`` (transposed: ``nn.Linear`` stores (out, in)),
``model/norm/scale`` is ``model.norm.weight``, ``model/embed_tokens/embedding`` is
``model.embed_tokens.weight``. ``lm_head/kernel`` exists only when the config unties the
output matrix from the word embeddings.

Covered: RoPE (default, or Llama 3.1's ``rope_type: "llama3"``), RMSNorm, grouped-query
attention, the SwiGLU MLP, Qwen2's q/k/v biases (Llama's ``attention_bias`` and
``mlp_bias``), sliding-window attention (Mistral's ``sliding_window``, Qwen2's sliding
``layer_types``) and an explicit ``head_dim``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models import layers
from jaxprune.models.heads import Output

#: The transformers ``model_type`` values :class:`LlamaConfig` reads.
MODEL_TYPES = ("llama", "qwen2", "mistral")

KV = tuple[jax.Array, jax.Array]  # one layer's keys and values, (batch, keys, kv_heads, head_dim)


@dataclasses.dataclass(frozen=True)
class Llama3Rope:
    """Llama 3.1's frequency-dependent RoPE scaling (``rope_type: "llama3"``)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture hyperparameters (transformers' names where they agree)."""

    model_type: str  # one of MODEL_TYPES
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_llama3: Llama3Rope | None = None
    qkv_bias: bool = False  # q_proj, k_proj, v_proj (Qwen2; Llama's attention_bias)
    o_bias: bool = False  # o_proj (Llama's attention_bias)
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_windows: tuple[int | None, ...] = ()  # per layer; None or (): full causal attention
    attention_dropout: float = 0.0
    # Compacted models (jaxprune.compact): query heads, key/value heads and MLP width kept in
    # each layer. None: every layer has num_attention_heads, num_key_value_heads and
    # intermediate_size. transformers' classes cannot hold per-layer sizes.
    layer_heads: tuple[int, ...] | None = None
    layer_kv_heads: tuple[int, ...] | None = None
    layer_intermediate: tuple[int, ...] | None = None

    def __post_init__(self):
        for name in ("layer_heads", "layer_kv_heads", "layer_intermediate", "sliding_windows"):
            sizes = getattr(self, name)
            if sizes is not None:  # JSON gives lists; keep it hashable
                object.__setattr__(self, name, tuple(sizes))
        if (self.layer_heads is None) != (self.layer_kv_heads is None):
            raise ValueError("layer_heads and layer_kv_heads are set together (or neither)")
        for name in ("layer_heads", "layer_kv_heads", "layer_intermediate"):
            sizes = getattr(self, name)
            if sizes is not None and len(sizes) != self.num_hidden_layers:
                raise ValueError(
                    f"{name} has {len(sizes)} entries for {self.num_hidden_layers} layers"
                )
            if sizes is not None and any(n < 0 for n in sizes):
                raise ValueError(f"{name}={sizes}: every entry must be >= 0")
        for layer in range(self.num_hidden_layers if self.layer_heads is not None else 0):
            heads, kv = self.heads_of(layer), self.kv_heads_of(layer)
            if (kv == 0 and heads) or (kv and heads % kv):
                raise ValueError(
                    f"layer {layer} has {heads} query heads for {kv} key/value heads: "
                    f"each key/value head serves an equal number (>= 1) of query heads"
                )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}: grouped-query attention "
                f"shares each key/value head among an equal number of query heads"
            )
        if self.sliding_windows and len(self.sliding_windows) != self.num_hidden_layers:
            raise ValueError(
                f"sliding_windows has {len(self.sliding_windows)} entries for "
                f"{self.num_hidden_layers} layers"
            )
        if any(w is not None and w < 1 for w in self.sliding_windows):
            raise ValueError(f"sliding_windows={self.sliding_windows}: a window must be >= 1")

    def heads_of(self, layer: int) -> int:
        """Query heads of layer ``layer`` (0-based)."""
        return self.num_attention_heads if self.layer_heads is None else self.layer_heads[layer]

    def kv_heads_of(self, layer: int) -> int:
        """Key/value heads of layer ``layer`` (0-based)."""
        if self.layer_kv_heads is None:
            return self.num_key_value_heads
        return self.layer_kv_heads[layer]

    def intermediate_of(self, layer: int) -> int:
        """MLP width of layer ``layer`` (0-based)."""
        if self.layer_intermediate is None:
            return self.intermediate_size
        return self.layer_intermediate[layer]

    def window_of(self, layer: int) -> int | None:
        """Layer ``layer``'s attention window (keys back from the query, itself included);
        None: every earlier key."""
        return self.sliding_windows[layer] if self.sliding_windows else None

    @classmethod
    def from_hf(cls, hf: Any) -> LlamaConfig:
        """From a transformers ``LlamaConfig``, ``Qwen2Config`` or ``MistralConfig``.

        Raises:
          ValueError: another model type, a RoPE other than the default and ``llama3``, a
            partial rotary factor, or a Qwen2 layer type other than full / sliding attention.
        """
        model_type = hf.model_type
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {model_type!r}: jaxprune's Llama-family decoders "
                f"cover {', '.join(MODEL_TYPES)}"
            )
        heads, layers_n = hf.num_attention_heads, hf.num_hidden_layers
        window = getattr(hf, "sliding_window", None)
        if model_type == "qwen2":  # sliding only on the layers layer_types names
            types = list(hf.layer_types)
            unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
            if unknown:
                raise ValueError(f"qwen2 layer_types {unknown} are not supported")
            windows = tuple(window if t == "sliding_attention" else None for t in types)
        else:  # Mistral slides every layer when sliding_window is set; Llama never does
            windows = (window,) * layers_n
        attention_bias = bool(getattr(hf, "attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            num_hidden_layers=layers_n,
            num_attention_heads=heads,
            num_key_value_heads=getattr(hf, "num_key_value_heads", None) or heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // heads,
            intermediate_size=hf.intermediate_size,
            hidden_act=hf.hidden_act,
            max_position_embeddings=hf.max_position_embeddings,
            rms_norm_eps=hf.rms_norm_eps,
            **_rope_of(hf),
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=attention_bias,
            mlp_bias=bool(getattr(hf, "mlp_bias", False)),
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            sliding_windows=windows,
            attention_dropout=float(getattr(hf, "attention_dropout", 0.0) or 0.0),
        )


def _rope_of(hf: Any) -> dict[str, Any]:
    """``rope_theta`` and ``rope_llama3`` of a transformers config (``rope_parameters``)."""
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise ValueError(
            f"{hf.model_type} config has rope_type={rope_type!r} (rope_parameters={rope}): "
            f"jaxprune's Llama-family decoders support the default RoPE and 'llama3' scaling only"
        )
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(
            f"partial_rotary_factor={rope['partial_rotary_factor']} is not supported: "
            f"jaxprune rotates the whole head"
        )
    theta = rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
    scaling = None
    if rope_type == "llama3":
        scaling = Llama3Rope(
            factor=float(rope["factor"]),
            low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
            original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
        )
    return dict(rope_theta=float(theta), rope_llama3=scaling)


def rope_frequencies(cfg: LlamaConfig) -> np.ndarray:
    """(head_dim // 2,) float32 inverse frequencies, Llama-3-scaled where configured; in
    float32 like transformers, so angles agree to the last bit or two."""
    inv = layers.rope_frequencies(cfg.rope_theta, cfg.head_dim)
    s = cfg.rope_llama3
    if s is None:
        return inv
    old = s.original_max_position_embeddings
    wavelen = np.float32(2 * np.pi) / inv
    scaled = np.where(wavelen > old / s.low_freq_factor, inv / np.float32(s.factor), inv)
    smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= old / s.high_freq_factor) & (wavelen <= old / s.low_freq_factor)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def causal_mask(queries: jax.Array, keys: jax.Array, window: int | None) -> jax.Array:
    """(batch, q, k) bool: a query may see a key at or before it, within ``window`` tokens
    (itself included) when set. ``queries`` (batch or 1, q) and ``keys`` (1, k) are indices
    in the row (cache slots when decoding)."""
    q, k = queries[:, :, None], keys[:, None, :]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k > q - window)
    return allowed


def _rms_norm(cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype: Any) -> nnx.RMSNorm:
    init = nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",), eager_sharding=False)
    return nnx.RMSNorm(
        cfg.hidden_size,
        epsilon=cfg.rms_norm_eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=init,
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Grouped-query self-attention with RoPE (``self_attn``)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        h, d = cfg.hidden_size, cfg.head_dim
        self.heads, self.kv_heads = cfg.heads_of(layer), cfg.kv_heads_of(layer)
        self.head_dim = d
        kw: dict[str, Any] = dict(bias=cfg.qkv_bias, rngs=rngs, dtype=dtype)
        self.q_proj = layers.dense(h, self.heads * d, ("embed", "heads"), **kw)
        self.k_proj = layers.dense(h, self.kv_heads * d, ("embed", "heads"), **kw)
        self.v_proj = layers.dense(h, self.kv_heads * d, ("embed", "heads"), **kw)
        self.o_proj = layers.dense(
            self.heads * d, h, ("heads", "embed"), bias=cfg.o_bias, rngs=rngs, dtype=dtype
        )
        self.attn_dropout = nnx.Dropout(cfg.attention_dropout)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        inv_freq: np.ndarray,
        mask: jax.Array,
        cache: KV | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> tuple[jax.Array, KV]:
        """``x`` (batch, length, hidden) at ``positions`` (batch or 1, length); ``mask``
        (batch or 1, length, keys) bool.

        Without ``cache`` the keys are ``x``'s own; with it (this layer's keys and values,
        (batch, keys, kv_heads, head_dim)) ``x``'s are written into it at ``positions`` and
        the whole cache is attended over.

        Returns:
          (output (batch, length, hidden), the keys and values attended over).
        """
        b, t, _ = x.shape
        q = layers.rotate(
            self.q_proj(x).reshape(b, t, self.heads, self.head_dim), positions, inv_freq
        )
        k = layers.rotate(
            self.k_proj(x).reshape(b, t, self.kv_heads, self.head_dim), positions, inv_freq
        )
        v = self.v_proj(x).reshape(b, t, self.kv_heads, self.head_dim)
        if cache is not None:
            rows = jnp.arange(b)[:, None]
            k, v = cache[0].at[rows, positions].set(k), cache[1].at[rows, positions].set(v)
        if not self.heads:  # a compacted layer without heads: only o_proj's bias is left
            return self.o_proj(x[..., :0]), (k, v)
        groups = self.heads // self.kv_heads  # query head i reads key/value head i // groups
        out, _ = layers.attention(
            q,
            jnp.repeat(k, groups, axis=2),
            jnp.repeat(v, groups, axis=2),
            jnp.broadcast_to(mask, (b, *mask.shape[1:])),
            dropout=self.attn_dropout,
            deterministic=deterministic,
            rngs=rngs,
        )
        return self.o_proj(out.reshape(b, t, -1)), (k, v)


class MLP(nnx.Module):
    """SwiGLU: ``down_proj(act(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        h, n = cfg.hidden_size, cfg.intermediate_of(layer)
        kw: dict[str, Any] = dict(bias=cfg.mlp_bias, rngs=rngs, dtype=dtype)
        self.act = layers.activation(cfg.hidden_act)
        self.gate_proj = layers.dense(h, n, ("embed", "mlp"), **kw)
        self.up_proj = layers.dense(h, n, ("embed", "mlp"), **kw)
        self.down_proj = layers.dense(n, h, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        self.input_layernorm = _rms_norm(cfg, rngs=rngs, dtype=dtype)
        self.self_attn = Attention(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.post_attention_layernorm = _rms_norm(cfg, rngs=rngs, dtype=dtype)
        self.mlp = MLP(cfg, rngs=rngs, dtype=dtype, layer=layer)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        inv_freq: np.ndarray,
        mask: jax.Array,
        cache: KV | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> tuple[jax.Array, KV]:
        """As :meth:`Attention.__call__`: (output (batch, length, hidden), keys and values)."""
        out, kv = self.self_attn(
            self.input_layernorm(x),
            positions,
            inv_freq,
            mask,
            cache,
            deterministic=deterministic,
            rngs=rngs,
        )
        x = x + out
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class LlamaModel(nnx.Module):
    """The body (``model``): token embeddings, decoder layers, final RMSNorm."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype: Any):
        self.cfg = cfg
        self.embed_tokens = layers.embed(
            cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), rngs=rngs, dtype=dtype
        )
        self.layers = nnx.List(
            [
                DecoderLayer(cfg, rngs=rngs, dtype=dtype, layer=i)
                for i in range(cfg.num_hidden_layers)
            ]
        )
        self.norm = _rms_norm(cfg, rngs=rngs, dtype=dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array,
        masks: dict[int | None, jax.Array],
        caches: tuple[KV, ...] | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> tuple[jax.Array, tuple[jax.Array, ...], tuple[KV, ...]]:
        """``input_ids`` (batch, length) at ``positions`` (batch or 1, length); ``masks``:
        the (batch or 1, length, keys) bool mask of every layer window; ``caches``: every
        layer's keys and values to decode into (see :meth:`Attention.__call__`).

        Returns:
          (final normed states (batch, length, hidden), the embeddings and every layer's
          output, every layer's keys and values).
        """
        inv_freq = rope_frequencies(self.cfg)
        x = self.embed_tokens(input_ids)
        hidden, kvs = [x], []
        for i, layer in enumerate(self.layers):
            mask = masks[self.cfg.window_of(i)]
            cache = None if caches is None else caches[i]
            x, kv = layer(
                x, positions, inv_freq, mask, cache, deterministic=deterministic, rngs=rngs
            )
            hidden.append(x)
            kvs.append(kv)
        return self.norm(x), tuple(hidden), tuple(kvs)


class LlamaForCausalLM(nnx.Module):
    """A Llama, Qwen2 or Mistral causal LM, tied or untied output matrix.

    ``model(input_ids, attention_mask)`` returns :class:`Output` with logits of shape
    (batch, length, vocab). Positions count from 0 at the first column (as transformers does
    without ``position_ids``), so pad on the right.
    """

    hf_config_json: str | None = None  # the transformers config, set by jaxprune.hf.build

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.cfg = cfg
        self.model = LlamaModel(cfg, rngs=rngs, dtype=dtype)
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else layers.dense(
                cfg.hidden_size,
                cfg.vocab_size,
                ("embed", "vocab"),
                bias=False,
                rngs=rngs,
                dtype=dtype,
            )
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
        output_hidden_states: bool = False,
        position_ids: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> Output:
        """Logits of every position.

        Args:
          input_ids: (batch, length) int.
          attention_mask: (batch, length), 1 on real tokens, 0 on (right) padding.
          deterministic, rngs: attention dropout when not deterministic.
          output_hidden_states: also return the embeddings and every layer's output.
          position_ids: (batch, length) RoPE positions; None: 0, 1, ...
          segment_ids: (batch, length) int, packed rows: ``k + 1`` on the ``k``-th example,
            0 on padding; a token attends only to its own example (give ``position_ids``
            restarting at 0 with every example).
        """
        x, hidden, _ = self._body(
            input_ids,
            attention_mask,
            position_ids,
            segment_ids,
            deterministic=deterministic,
            rngs=rngs,
        )
        return Output(self.logits(x), hidden if output_hidden_states else None)

    def _body(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None,
        position_ids: jax.Array | None,
        segment_ids: jax.Array | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> tuple[jax.Array, tuple[jax.Array, ...], tuple[KV, ...]]:
        """The body over whole rows: see :meth:`__call__` and :meth:`LlamaModel.__call__`."""
        index = jnp.arange(input_ids.shape[1])[None]
        if segment_ids is not None:
            pairs: jax.Array | None = layers.segment_mask(segment_ids, attention_mask)
        elif attention_mask is not None:
            pairs = attention_mask[:, None, :].astype(bool)
        else:
            pairs = None
        positions = index if position_ids is None else position_ids
        return self.model(
            input_ids,
            positions,
            self._masks(index, index, pairs),
            None,
            deterministic=deterministic,
            rngs=rngs,
        )

    def _masks(
        self, queries: jax.Array, keys: jax.Array, pairs: jax.Array | None
    ) -> dict[int | None, jax.Array]:
        """Every layer window's mask: :func:`causal_mask` and ``pairs`` (batch, q, k) bool."""
        masks = {}
        for window in set(self.cfg.sliding_windows) or {None}:
            mask = causal_mask(queries, keys, window)
            masks[window] = mask if pairs is None else mask & pairs
        return masks

    def logits(self, x: jax.Array) -> jax.Array:
        """(batch, length, vocab) from final normed states (batch, length, hidden)."""
        if self.lm_head is None:
            return x @ self.model.embed_tokens.embedding[...].T.astype(x.dtype)
        return self.lm_head(x)

    def prefill(
        self, input_ids: jax.Array, attention_mask: jax.Array, size: int
    ) -> tuple[jax.Array, tuple[KV, ...]]:
        """Runs the prompts ``input_ids`` (batch, length), right-padded as
        ``attention_mask`` (batch, length) says, and returns (logits (batch, length, vocab),
        every layer's keys and values in a cache of ``size`` >= length slots)."""
        x, _, kvs = self._body(input_ids, attention_mask, None, None, deterministic=True, rngs=None)
        pad = ((0, 0), (0, size - input_ids.shape[1]), (0, 0), (0, 0))
        return self.logits(x), tuple((jnp.pad(k, pad), jnp.pad(v, pad)) for k, v in kvs)

    def decode_step(
        self, tokens: jax.Array, positions: jax.Array, caches: tuple[KV, ...]
    ) -> tuple[jax.Array, tuple[KV, ...]]:
        """One token per row: ``tokens`` (batch, 1) at ``positions`` (batch, 1), which are
        also their cache slots. Returns (logits (batch, 1, vocab), the updated caches)."""
        slots = jnp.arange(caches[0][0].shape[1])[None]
        masks = self._masks(positions, slots, None)
        x, _, caches = self.model(tokens, positions, masks, caches, deterministic=True, rngs=None)
        return self.logits(x), caches


def greedy_decode(
    model: LlamaForCausalLM, input_ids: jax.Array, lengths: jax.Array, max_new_tokens: int
) -> jax.Array:
    """Greedy decoding with a KV cache, jittable (``max_new_tokens`` static; ``model``'s
    params may be traced, e.g. ``nnx.merge(graphdef, params)`` inside ``jax.jit``).

    Args:
      input_ids: (batch, prompt) int; row ``r``'s prompt is ``input_ids[r, :lengths[r]]``
        (right padding).
      lengths: (batch,) int prompt lengths, >= 1.

    Returns:
      (batch, prompt + max_new_tokens) as :func:`jaxprune.models.gpt2.greedy_decode`: row
      ``r``'s new tokens are at ``[lengths[r], lengths[r] + max_new_tokens)``. The prompts
      run once; every new token then runs alone against the cached keys and values.
    """
    batch, prompt = input_ids.shape
    rows = jnp.arange(batch)
    buf = jnp.zeros((batch, prompt + max_new_tokens), input_ids.dtype)
    buf = buf.at[:, :prompt].set(input_ids)
    if max_new_tokens == 0:
        return buf
    valid = jnp.arange(prompt)[None] < lengths[:, None]
    logits, caches = model.prefill(input_ids, valid, prompt + max_new_tokens)
    buf = buf.at[rows, lengths].set(jnp.argmax(logits[rows, lengths - 1], -1).astype(buf.dtype))

    def step(i, carry):
        buf, caches = carry
        last = lengths + i - 1  # the token written by the previous step
        logits, caches = model.decode_step(buf[rows, last][:, None], last[:, None], caches)
        return buf.at[rows, last + 1].set(jnp.argmax(logits[:, 0], -1).astype(buf.dtype)), caches

    buf, _ = jax.lax.fori_loop(1, max_new_tokens, step, (buf, caches))
    return buf


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    input_ids: jax.Array,
    lengths: jax.Array,
    max_new_tokens: int,
) -> jax.Array:
    return greedy_decode(nnx.merge(graphdef, state), input_ids, lengths, max_new_tokens)


def generate_greedy(
    model: LlamaForCausalLM,
    input_ids: jax.Array,
    max_new_tokens: int,
    lengths: jax.Array | None = None,
) -> jax.Array:
    """Greedy decoding with ``model`` and a KV cache: (batch, prompt) int -> (batch, prompt
    + max_new_tokens); ``lengths`` as in :func:`greedy_decode` (default: full rows)."""
    batch, prompt = input_ids.shape
    if lengths is None:
        lengths = jnp.full((batch,), prompt, jnp.int32)
    graphdef, state = nnx.split(model)
    return _generate(
        graphdef, state, jnp.asarray(input_ids), jnp.asarray(lengths, jnp.int32), max_new_tokens
    )


__all__ = [
    "KV",
    "MLP",
    "MODEL_TYPES",
    "Attention",
    "DecoderLayer",
    "Llama3Rope",
    "LlamaConfig",
    "LlamaForCausalLM",
    "LlamaModel",
    "causal_mask",
    "generate_greedy",
    "greedy_decode",
    "rope_frequencies",
]
