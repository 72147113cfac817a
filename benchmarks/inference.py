"""Inference speed and file size: dense, unstructured-sparse and compacted MiniLM, one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/inference.py [--shapes 32x128,1x128]
        [--sparsities 0.5,0.9,0.97] [--structured 0.25,0.5,0.75] [--repeats 5] [--no-bcoo]

all-MiniLM-L6-v2 with a 2-label sequence-classification head (``load_pretrained("minilm")``),
forward pass (logits) on random token ids without padding, on the default JAX device. Rows:

- ``dense``: the checkpoint as loaded.
- ``masked s``: the encoder kernels (``paths.BERT_ENCODER_KERNELS``; embeddings, biases,
  norms and head not pruned) zeroed to global magnitude sparsity ``s``, still dense arrays:
  the same XLA program as ``dense``, so the same speed is expected.
- ``bcoo s``: the same masked kernels as ``jax.experimental.sparse.BCOO`` matrices, run
  through ``sparse.sparsify`` (skip with ``--no-bcoo``).
- ``compact f``: a fraction ``f`` of all heads and of all FFN neurons removed by summed
  magnitude (``structured.structure_masks``, global over layers), then ``compact.compact``:
  a physically smaller model. Accuracy is not measured here (no fine-tuning).

Variants are interleaved in rounds and compilation is excluded; ``ratio`` is the median of
per-round (dense time / variant time), so > 1 is faster than dense, and ``min ratio`` the
ratio of the fastest samples. Sizes: the dense ``model.safetensors`` of ``hf.save_pretrained``,
``export.save`` files of the masked params (whole file and encoder kernels only), and
``compact.save`` folders. The script prints the command, versions and device.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import sparse

from jaxprune import compact, export, hf, masks, paths, structured

PRUNABLE = paths.BERT_ENCODER_KERNELS
WORDS = r"word_embeddings/embedding$"


class Variant(NamedTuple):
    name: str
    forward: Callable[[jax.Array, jax.Array], jax.Array]  # (ids, mask) -> logits
    params: int  # parameter count (non-zeros for sparse formats)
    check: str  # how its logits compare to the reference it must match


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="32x128,1x128", help="batch x length, comma list")
    parser.add_argument("--sparsities", type=floats, default=[0.5, 0.9, 0.97])
    parser.add_argument("--structured", type=floats, default=[0.25, 0.5, 0.75])
    parser.add_argument("--bcoo-sparsities", type=floats, default=[0.9, 0.97])
    parser.add_argument("--no-bcoo", action="store_true", help="skip the BCOO rows")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument(
        "--min-sample-s", type=float, default=0.1, help="calls per sample fill this"
    )
    args = parser.parse_args()
    args.shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    return args


def command_line() -> str:
    return shlex.join([os.path.relpath(sys.executable), *sys.argv])


def jitted(graphdef: Any, params: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The model's forward pass with ``params`` as an argument (not folded as constants)."""
    fn = jax.jit(lambda p, ids, mask: nnx.merge(graphdef, p)(ids, mask).logits)
    return lambda ids, mask: fn(params, ids, mask)


def bcoo_forward(graphdef: Any, params: Any) -> tuple[Callable, int]:
    """The forward pass with every pruned kernel as a BCOO matrix; (forward, stored entries)."""

    def to_bcoo(path, p):
        prunable = re.search(PRUNABLE, paths.path_str(path)) is not None
        return sparse.BCOO.fromdense(p) if prunable else p

    sparse_params = jax.tree_util.tree_map_with_path(to_bcoo, params)
    fn = jax.jit(sparse.sparsify(lambda p, ids, mask: nnx.merge(graphdef, p)(ids, mask).logits))
    is_bcoo = lambda x: isinstance(x, sparse.BCOO)  # noqa: E731
    stored = sum(
        int(x.nse) if is_bcoo(x) else x.size
        for x in jax.tree.leaves(sparse_params, is_leaf=is_bcoo)
    )
    return (lambda ids, mask: fn(sparse_params, ids, mask)), stored


def magnitude(params: Any, prunable: str = PRUNABLE) -> Any:
    selected = paths.select(params, prunable)
    return jax.tree.map(lambda s, p: jnp.abs(p) if s else None, selected, params)


def count(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def nonzeros(params: Any) -> int:
    return sum(int(jnp.count_nonzero(x)) for x in jax.tree.leaves(params))


def max_diff(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.max(jnp.abs(a - b)))


def compacted(
    name: str, model: Any, masked: dict, masked_fwd: Callable, probe: tuple[jax.Array, jax.Array]
) -> tuple[Variant, tuple[Any, dict, compact.Kept]]:
    """The compacted model of ``masked`` as a variant, checked against ``masked_fwd``."""
    small, small_params, kept = compact.compact(model, masked)
    fwd = jitted(nnx.graphdef(small), small_params)
    diff = max_diff(fwd(*probe), masked_fwd(*probe))
    return Variant(name, fwd, count(small_params), f"{diff:.1e} vs masked"), (
        small,
        small_params,
        kept,
    )


def removes_something(model: Any, kept: compact.Kept) -> bool:
    cfg = model.cfg
    full = cfg.num_hidden_layers * (cfg.num_attention_heads + cfg.intermediate_size)
    return sum(len(k) for k in kept.heads + kept.neurons) < full


def build_variants(
    args: argparse.Namespace, model: Any, params: dict, probe: tuple[jax.Array, jax.Array]
) -> tuple[list[Variant], dict[str, Any]]:
    """Every timed variant, and what the size tables need: masked params, compactions."""
    graphdef = nnx.graphdef(model)
    variants = [Variant("dense", jitted(graphdef, params), count(params), "reference")]
    extra: dict[str, Any] = {"masked": {}, "compact": {}}
    scores = magnitude(params)
    for s in args.sparsities:
        masked = masks.apply(params, masks.topk(scores, s))
        fwd = jitted(graphdef, masked)
        variants.append(Variant(f"masked {s:.0%}", fwd, nonzeros(masked), "= dense program"))
        if not args.no_bcoo and s in args.bcoo_sparsities:
            bfwd, stored = bcoo_forward(graphdef, masked)
            diff = max_diff(bfwd(*probe), fwd(*probe))
            variants.append(Variant(f"bcoo {s:.0%}", bfwd, stored, f"{diff:.1e} vs masked"))
        variant, small = compacted(f"masked {s:.0%} compact", model, masked, fwd, probe)
        if removes_something(model, small[2]):  # whole structures left by unstructured
            variants.append(variant)
        extra["masked"][s] = (masked, small[2])
    for f in args.structured:
        keep = structured.structure_masks(
            scores, model.cfg.head_dim, head_sparsity=f, neuron_sparsity=f
        )
        masked = masks.apply(params, keep)
        variant, small = compacted(
            f"compact {f:.0%}", model, masked, jitted(graphdef, masked), probe
        )
        variants.append(variant)
        extra["compact"][f] = small
    return variants, extra


def timed(fn: Callable[[], jax.Array], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    out.block_until_ready()
    return (time.perf_counter() - start) / calls


def measure(
    variants: list[Variant], batch: tuple[jax.Array, jax.Array], args: argparse.Namespace
) -> tuple[dict[str, list[float]], int]:
    """Seconds per forward of every variant over interleaved rounds, and calls per sample."""
    for v in variants:  # compiles for this shape
        v.forward(*batch).block_until_ready()
    once = min(timed(lambda v=v: v.forward(*batch), 1) for v in variants)
    calls = max(1, round(args.min_sample_s / once))
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            samples[v.name].append(timed(lambda v=v: v.forward(*batch), calls))
    return samples, calls


def print_speed(variants: list[Variant], samples: dict[str, list[float]], tokens: int) -> None:
    dense = samples["dense"]
    print(
        f"{'variant':<20} {'params':>11} {'median ms':>10} {'min ms':>8} {'tokens/s':>9} "
        f"{'speed-up':>9} {'min ratio':>9}  check"
    )
    for v in variants:
        s = samples[v.name]
        ratio = statistics.median(d / t for d, t in zip(dense, s, strict=True))
        print(
            f"{v.name:<20} {v.params:>11,} {1e3 * statistics.median(s):>10.2f} "
            f"{1e3 * min(s):>8.2f} {tokens / statistics.median(s):>9.0f} {ratio:>8.2f}x "
            f"{min(dense) / min(s):>8.2f}x  {v.check}"
        )


def print_sizes(model: Any, params: dict, extra: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        hf.save_pretrained(model, params, tmp / "dense")
        dense = (tmp / "dense" / "model.safetensors").stat().st_size
        print(f"{'file':<44} {'bytes':>12} {'/ dense':>8} {'encoder kernels':>16}")
        print(f"{'dense model.safetensors':<44} {dense:>12,} {1.0:>8.3f}")
        for s, (masked, _) in extra["masked"].items():
            embeddings = masks.apply(masked, masks.topk(magnitude(masked, WORDS), s))
            for name, tree, values_dtype in (
                (f"export.save masked {s:.0%}", masked, None),
                (f"export.save masked {s:.0%}, bfloat16", masked, "bfloat16"),
                (f"export.save masked {s:.0%} + word emb. {s:.0%}", embeddings, None),
            ):
                report = export.save(tmp / "c.safetensors", tree, values_dtype=values_dtype)
                print(
                    f"{name:<44} {report.file_bytes:>12,} {report.file_bytes / dense:>8.3f} "
                    f"{report.ratio_of(PRUNABLE):>16.3f}"
                )
        for f, (small, small_params, kept) in extra["compact"].items():
            compact.save(small, small_params, tmp / f"compact{f}")
            size = (tmp / f"compact{f}" / compact.PARAMS_FILE).stat().st_size
            heads = sum(len(k) for k in kept.heads)
            neurons = sum(len(k) for k in kept.neurons)
            name = f"compact.save {f:.0%} ({heads} heads, {neurons} neurons)"
            print(f"{name:<44} {size:>12,} {size / dense:>8.3f}")


def print_structures(model: Any, extra: dict[str, Any]) -> None:
    cfg = model.cfg
    heads = cfg.num_attention_heads * cfg.num_hidden_layers
    neurons = cfg.intermediate_size * cfg.num_hidden_layers
    print(f"heads and FFN neurons kept per layer (of {heads} heads, {neurons} neurons):")
    rows = [(f"masked {s:.0%} + compact", kept) for s, (_, kept) in extra["masked"].items()]
    rows += [(f"compact {f:.0%}", kept) for f, (_, _, kept) in extra["compact"].items()]
    for name, kept in rows:
        print(
            f"  {name:<22} heads {[len(k) for k in kept.heads]}, "
            f"neurons {[len(k) for k in kept.neurons]}"
        )


def main() -> None:
    start = time.perf_counter()
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, params, _ = hf.load_pretrained("minilm", head="sequence-classification")
    vocab = model.cfg.vocab_size
    rng = np.random.default_rng(0)
    batches = {
        shape: (
            jnp.asarray(rng.integers(1000, vocab, size=shape), jnp.int32),
            jnp.ones(shape, jnp.int32),
        )
        for shape in args.shapes
    }
    probe = next(iter(batches.values()))
    variants, extra = build_variants(args, model, params, probe)
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}; device {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} CPU cores"
    )
    print(f"command: {command_line()}")
    print(f"load average (1, 5 min) before timing: {os.getloadavg()[:2]}")
    print(
        "model: all-MiniLM-L6-v2 + 2-label head; pruned: the 36 encoder kernels; not pruned "
        "unless said: embeddings, biases, LayerNorms, pooler, classifier. params: non-zeros "
        "(masked), stored entries (BCOO), array sizes (compacted)\n"
    )
    for shape, batch in batches.items():
        samples, calls = measure(variants, batch, args)
        print(f"batch {shape[0]} x {shape[1]}: {args.repeats} rounds x {calls} call(s)")
        print_speed(variants, samples, shape[0] * shape[1])
        print()
    print_structures(model, extra)
    print()
    print_sizes(model, params, extra)
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
