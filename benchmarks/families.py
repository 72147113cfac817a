"""Throughput of jaxprune's model families against transformers' PyTorch, side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/families.py      # hidden 256, 4 layers, 8 x 128
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/families.py --tiny   # few-second smoke test
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/families.py --families llama --rounds 10

For each family a small, randomly initialised transformers PyTorch model is built from a
config (default: hidden 256, 4 layers, 4 heads, intermediate 1024, vocab 8000), saved with
``save_pretrained`` to a temporary folder and loaded in jaxprune with
``jaxprune.hf.load_pretrained``, so both sides hold the same weights, head included
(redrawn with standard deviation 1 / sqrt(hidden), norm scales 1 + 0.1 N(0, 1), so that the
logits are not near zero):

- ``bert``: the reference row (BERT-like encoder, as all-MiniLM in ``models.py``);
- ``deberta``: deberta-v2 with a v3-style config (relative attention, 256 position buckets,
  shared attention keys, ``p2c|c2p``, no absolute positions, no token types);
- ``modernbert``: a global attention layer every 3 layers, the others local with a window
  of half the sequence;
- ``llama``: grouped-query attention (half as many key/value heads as query heads).

Encoders get a 2-label sequence-classification head (torch:
``AutoModelForSequenceClassification``), Llama its causal-LM head
(``AutoModelForCausalLM``). Both sides' logits on the benchmark batch are compared first
(Llama: at the positions that are not padding); a family whose logits differ by 1e-3 or more
is not timed, and the script exits 1 at the end. Dropout is off on both sides.

Parts, each in tokens/s of the padded batch (``--parts``):

- ``forward``: logits only (jitted; torch in eval mode under ``torch.inference_mode``);
- ``grad``: loss and its gradient w.r.t. all parameters (not timed by default);
- ``train``: loss, gradient and an AdamW update (``optax.adamw`` / ``torch.optim.AdamW``):
  ``nnx.merge(graphdef, params)`` inside ``jax.jit``, params and optimizer state donated.

The loss is softmax cross-entropy: of the label for the encoders, of the next token at every
position that is not padding for Llama. Compilation and one warm-up call per part are
excluded. Within a family, jax and torch alternate in each round (``models.measure``); each
row gives the median over rounds of both throughputs and the median of the per-round ratios
(jax/torch > 1: jaxprune faster). Goal (issue 19): >= 1.0x for every family.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from models import (  # benchmarks/models.py
    JaxBench,
    _cores,
    command_line,
    cross_entropy,
    measure,
    other_load,
)

import jaxprune.hf

FAMILIES = ("bert", "deberta", "modernbert", "llama")
PARTS = ("forward", "grad", "train")
NUM_LABELS = 2
TOLERANCE = 1e-3
GOAL = 1.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma list")
    parser.add_argument("--parts", default="forward,train", help="comma list of " + "/".join(PARTS))
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per family")
    parser.add_argument("--steps", type=int, default=1, help="calls per timed sample")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=None, help="default 4 x hidden")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke test: hidden 32, 2 layers, 2 heads, vocab 1000, batch 2 x seq 32, 2 rounds",
    )
    args = parser.parse_args()
    if args.tiny:
        args.hidden, args.layers, args.heads, args.vocab = 32, 2, 2, 1000
        args.batch, args.seq, args.rounds = 2, 32, 2
    if args.intermediate is None:
        args.intermediate = 4 * args.hidden
    args.families = [f for f in args.families.split(",") if f]
    args.parts = [p for p in args.parts.split(",") if p]
    if bad := set(args.families) - set(FAMILIES):
        parser.error(f"unknown families {sorted(bad)}; choose from {list(FAMILIES)}")
    if bad := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(bad)}")
    if args.hidden % args.heads or args.heads % 2:
        parser.error("--heads must divide --hidden and be even (Llama: heads / 2 KV heads)")
    args.repeats = args.rounds  # the name models.measure reads
    return args


def hf_config(family: str, args: argparse.Namespace) -> Any:
    """The transformers config of ``family`` at the requested size, dropout off."""
    import transformers

    size = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=max(512, args.seq),
    )
    if family == "bert":
        return transformers.BertConfig(
            **size,
            num_labels=NUM_LABELS,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            classifier_dropout=0.0,
        )
    if family == "deberta":
        return transformers.DebertaV2Config(
            **size,
            num_labels=NUM_LABELS,
            relative_attention=True,
            max_relative_positions=-1,
            position_buckets=256,
            share_att_key=True,
            pos_att_type="p2c|c2p",
            norm_rel_ebd="layer_norm",
            position_biased_input=False,
            type_vocab_size=0,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pooler_dropout=0.0,
            cls_dropout=0.0,
        )
    if family == "modernbert":
        return transformers.ModernBertConfig(
            **size,
            num_labels=NUM_LABELS,
            global_attn_every_n_layers=3,
            local_attention=max(2, args.seq // 4 * 2),  # even, half the sequence
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
            embedding_dropout=0.0,
            attention_dropout=0.0,
            mlp_dropout=0.0,
            classifier_dropout=0.0,
            reference_compile=False,
        )
    return transformers.LlamaConfig(
        **size,
        num_key_value_heads=args.heads // 2,
        attention_dropout=0.0,
        use_cache=False,
    )


def make_batch(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Random ids, right-padded (id 0) from lengths in [seq/2, seq]; labels, and the
    next-token targets and weights of the causal LM."""
    rng = np.random.default_rng(0)
    b, s = args.batch, args.seq
    lengths = rng.integers(s // 2, s + 1, size=b)
    mask = (np.arange(s)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(3, args.vocab, size=(b, s))
    ids[:, 0] = 1
    ids[np.arange(b), lengths - 1] = 2
    ids = np.where(mask == 1, ids, 0).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": rng.integers(0, NUM_LABELS, size=b).astype(np.int32),
        "targets": np.concatenate([ids[:, 1:], np.zeros((b, 1), np.int32)], axis=1),
        "weights": np.concatenate([mask[:, 1:], np.zeros((b, 1), np.int32)], axis=1),
    }


def build_torch(family: str, args: argparse.Namespace, folder: str) -> Any:
    """transformers' model of ``family``, randomly initialised, saved to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = hf_config(family, args)
    auto = AutoModelForCausalLM if family == "llama" else AutoModelForSequenceClassification
    model = auto.from_config(config)
    # Redrawn larger than the configs' std 0.02, so that the logits (and the check of their
    # difference) are not near zero: std 1 / sqrt(hidden), norm scales 1 + 0.1 N(0, 1).
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            norm = "norm" in name.lower() and name.endswith("weight")
            p.copy_(1 + 0.1 * noise if norm else noise / args.hidden**0.5)
    model.save_pretrained(folder)
    return model


def jax_bench(family: str, args: argparse.Namespace, folder: str, batch: dict) -> JaxBench:
    """jaxprune's model from the saved folder: jitted forward, value-and-grad, train step."""
    causal = family == "llama"
    head = "causal-lm" if causal else "sequence-classification"
    model = jaxprune.hf.load_pretrained(folder, head=head, num_labels=NUM_LABELS).model
    b = {k: jnp.asarray(v) for k, v in batch.items()}
    inputs = (b["input_ids"], b["attention_mask"])
    if causal:
        return JaxBench(model, args.parts, inputs, (b["targets"], b["weights"]), next_token_loss)
    return JaxBench(model, args.parts, inputs, (b["labels"],), cross_entropy)


def next_token_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Softmax cross-entropy of the next tokens, averaged over the weighted positions."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (losses * weights).sum() / weights.sum()


class TorchBench:
    """The transformers model itself: forward, loss.backward, torch.optim.AdamW step."""

    def __init__(self, family: str, model: Any, batch: dict):
        import torch

        self.torch, self.model, self.causal = torch, model, family == "llama"
        self.attn = model.config._attn_implementation
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
        t = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}
        self.inputs = {k: t[k] for k in ("input_ids", "attention_mask")}
        self.labels = t["labels"]
        self.targets = t["targets"].masked_fill(t["weights"] == 0, -100)  # ignored
        self.fns = {"forward": self._forward, "grad": self._grad, "train": self._train}
        model.eval()
        with torch.inference_mode():
            self.logits = model(**self.inputs).logits.float().numpy()

    def _forward(self) -> None:
        self.model.eval()
        with self.torch.inference_mode():
            self.model(**self.inputs).logits.sum().item()

    def _grad(self) -> None:
        self.model.train()  # dropout probabilities are 0
        self.model.zero_grad(set_to_none=True)
        logits = self.model(**self.inputs).logits.float()
        cross_entropy = self.torch.nn.functional.cross_entropy
        if self.causal:
            loss = cross_entropy(logits.flatten(0, 1), self.targets.flatten(), ignore_index=-100)
        else:
            loss = cross_entropy(logits, self.labels)
        loss.backward()
        loss.item()

    def _train(self) -> None:
        self._grad()
        self.opt.step()

    def run(self, part: str) -> None:
        self.fns[part]()


def logits_diff(family: str, jax_logits: np.ndarray, torch_logits: np.ndarray, batch) -> float:
    diff = np.abs(jax_logits - torch_logits)
    if family == "llama":  # (batch, seq, vocab): the positions that are not padding
        diff = diff[batch["attention_mask"] == 1]
    return float(diff.max())


def run_family(family: str, args: argparse.Namespace, batch: dict) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"families-{family}-") as folder:
        torch_model = build_torch(family, args, folder)
        jb = jax_bench(family, args, folder, batch)
    tb = TorchBench(family, torch_model, batch)
    diff = logits_diff(family, jb.logits, tb.logits, batch)
    result = {
        "family": family,
        "params": jb.n_params,
        "compile_s": jb.compile_s,
        "attn": tb.attn,
        "diff": diff,
        "scale": float(np.abs(tb.logits).max()),
        "samples": None,
        "others": None,
    }
    print(
        f"{family}: {jb.n_params / 1e6:.2f}M params, torch attention {tb.attn}, "
        f"max |logits jaxprune - torch| = {diff:.2e} (max |logits| {result['scale']:.2f})",
        flush=True,
    )
    if diff < TOLERANCE:
        result["samples"], result["others"] = other_load(
            lambda: measure({"jax": jb, "torch": tb}, args)
        )
    else:
        print(f"{family}: logits differ by {diff:.2e} >= {TOLERANCE:g}; not timed", flush=True)
    return result


def print_table(results: list[dict[str, Any]], parts: list[str], tokens: int) -> None:
    print(
        f"{'family':<11} {'part':<8} {'jax tok/s':>10} {'torch tok/s':>12} {'jax/torch':>10} "
        f"{'goal':>5} {'compile s':>10} {'others':>7}"
    )
    for r in results:
        if r["samples"] is None:
            print(f"{r['family']:<11} {'-':<8} not timed: logits differ by {r['diff']:.2e}")
            continue
        for part in parts:
            j, t = r["samples"][part, "jax"], r["samples"][part, "torch"]
            ratio = statistics.median(tj / jj for jj, tj in zip(j, t, strict=True))
            others = "?" if r["others"] is None else f"{r['others']:.2f}"
            print(
                f"{r['family']:<11} {part:<8} {tokens / statistics.median(j):>10.0f} "
                f"{tokens / statistics.median(t):>12.0f} {ratio:>9.2f}x "
                f"{'ok' if ratio >= GOAL else 'miss':>5} {r['compile_s'][part]:>10.1f} "
                f"{others:>7}"
            )


def main() -> None:
    start = time.perf_counter()
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    load_start = os.getloadavg()
    batch = make_batch(args)
    results = []
    for family in args.families:
        results.append(run_family(family, args, batch))
        gc.collect()

    tokens = args.batch * args.seq
    real = int(batch["attention_mask"].sum())
    print()
    print(
        f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}; "
        f"torch {torch.__version__} (threads {args.threads}), "
        f"transformers {transformers.__version__}"
    )
    print(f"device: {jax.devices()[0].platform}, {_cores()} of {os.cpu_count()} CPU cores usable")
    print(f"command: {command_line()}")
    print(
        f"size: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, intermediate "
        f"{args.intermediate}, vocab {args.vocab}; batch {args.batch} x seq {args.seq} = "
        f"{tokens} tokens ({real} not padding); {args.rounds} rounds x {args.steps} call(s)"
    )
    print(
        f"machine: load average (1 min) {load_start[0]:.2f} before; 'others': cores other "
        f"processes used while timing the family (re-run if above ~0.1)"
    )
    print()
    print_table(results, args.parts, tokens)
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")
    if any(r["samples"] is None for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
