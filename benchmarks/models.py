"""Throughput of MiniLM with a classification head: jaxprune (JAX) against transformers (PyTorch).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/models.py            # batch 32 x seq 128
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/models.py --small    # batch 8 x seq 64
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/models.py --xla-flags=--xla_cpu_use_onednn=true

Both sides load all-MiniLM-L6-v2 (``jaxprune.hf.resolve("minilm")``) with a 2-label
sequence-classification head; the torch head is given jaxprune's (freshly initialised) head
weights, so both compute the same function, which is checked on the benchmark batch. Dropout
is off on both sides (jaxprune: ``deterministic=True``; torch: dropout probabilities 0).

Three parts are timed, each in tokens/s of the padded batch:

- ``forward``: logits only (jitted; torch in eval mode under ``torch.inference_mode``);
- ``grad``: softmax cross-entropy, its value and gradient w.r.t. all parameters;
- ``train``: ``grad`` plus an AdamW update (``optax.adamw`` / ``torch.optim.AdamW``): jitted
  ``nnx.merge(graphdef, params)`` inside ``jax.jit``, params and optimizer state donated.

Compilation and one warm-up call per part are excluded. Frameworks are interleaved within
each round (jax, torch, jax, torch, ...) and every row reports the median over rounds; the
jax/torch column is the median of the per-round throughput ratios (> 1: jaxprune faster).
Below the table, the libraries' own float32 matmuls at the model's three dense shapes
(XLA:CPU's ``jnp.dot`` against ``torch.matmul``): the ceiling of the step's ratio where the
dense layers dominate it.

Investigation switches (JAX side unless said): ``--xla-flags`` re-executes the script with
``XLA_FLAGS`` set; ``--dtype bfloat16`` computes in bf16 (torch: ``torch.autocast`` bf16);
``--attention einsum`` replaces ``jax.nn.dot_product_attention`` (used without dropout) with
jaxprune's explicit heads-major einsum path (used with dropout or scores); the earlier
formulations, for comparison: ``--dense nd`` applies the kernels to (batch, length, features)
instead of flattened (tokens, features), ``--gelu erfc`` uses ``jax.nn.gelu``'s erfc form
instead of the erf form; ``--gelu tanh`` uses the tanh approximation (changes the numbers;
diagnostic only).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxprune.hf
from jaxprune.models import layers

PARTS = ("forward", "grad", "train")
NAME = "minilm"  # the embedded all-MiniLM-L6-v2
NUM_LABELS = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument(
        "--small",
        action="store_true",
        help="batch 8 x seq 64, 5 calls per sample (overrides --batch/--seq, default --steps)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--steps", type=int, default=None, help="calls per timed sample (1)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma list of " + "/".join(PARTS))
    parser.add_argument("--frameworks", default="jax,torch", help="jax, torch or both")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--attention",
        choices=("dpa", "einsum"),
        default="dpa",
        help="jaxprune's attention without dropout: dot_product_attention, or its einsum path",
    )
    parser.add_argument("--gelu", choices=("erf", "erfc", "tanh"), default="erf")
    parser.add_argument(
        "--dense",
        choices=("flat", "nd"),
        default="flat",
        help="kernels applied to 2-D (tokens, features) as shipped, or to 3-D inputs",
    )
    parser.add_argument("--xla-flags", default=None, help="re-run with XLA_FLAGS set to this")
    args = parser.parse_args()
    if args.small:
        args.batch, args.seq = 8, 64
    if args.steps is None:
        args.steps = 5 if args.small else 1
    args.parts = [p for p in args.parts.split(",") if p]
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    if bad := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(bad)}")
    if bad := set(args.frameworks) - {"jax", "torch"}:
        parser.error(f"unknown frameworks {sorted(bad)}")
    return args


def reexec_with_xla_flags(flags: str) -> None:
    """XLA reads XLA_FLAGS once, when the backend starts: set it, then start over."""
    if os.environ.get("XLA_FLAGS") != flags:
        os.environ["XLA_FLAGS"] = flags
        os.execv(sys.executable, [sys.executable, *sys.argv])


def command_line() -> str:
    env = "HF_HUB_OFFLINE=1 " if os.environ.get("HF_HUB_OFFLINE") else ""
    return env + shlex.join([os.path.relpath(sys.executable), *sys.argv])


def make_batch(batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    """Random token ids with [CLS]/[SEP], padded to ``seq`` from lengths in [seq/2, seq]."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(seq // 2, seq + 1, size=batch)
    ids = rng.integers(1000, vocab, size=(batch, seq))
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 101
    ids[np.arange(batch), lengths - 1] = 102
    ids = np.where(mask == 1, ids, 0).astype(np.int32)
    labels = rng.integers(0, NUM_LABELS, size=batch).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def model_flops(cfg: Any, batch: int, seq: int) -> float:
    """Forward FLOPs of the matmuls (dense layers and attention); train ~ 3x forward."""
    h, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    dense = 2 * batch * seq * (4 * h * h + 2 * h * f)
    attention = 2 * 2 * batch * seq * seq * h
    return n * (dense + attention) + 2 * batch * h * (h + NUM_LABELS)


def patch_jaxprune(args: argparse.Namespace) -> None:
    """Applies the --attention / --dense / --gelu variants (before the model is built)."""
    if args.attention == "einsum":
        original = layers.attention

        def einsum_attention(*a: Any, **kw: Any) -> tuple[jax.Array, None]:
            # return_scores=True takes the explicit einsum path; XLA drops the unused scores.
            return original(*a, **{**kw, "return_scores": True})[0], None

        layers.attention = einsum_attention
    if args.dense == "nd":
        layers.Dense.__call__ = nnx.Linear.__call__
    if args.gelu == "erfc":
        layers.ACTIVATIONS["gelu"] = lambda x: jax.nn.gelu(x, approximate=False)
    elif args.gelu == "tanh":
        layers.ACTIVATIONS["gelu"] = layers.ACTIVATIONS["gelu_new"]


class JaxBench:
    """A jaxprune model's jitted forward, value-and-grad and AdamW train step on one batch
    (``inputs``: ids and attention mask); ``loss(logits, *targets)`` reads float32 logits.
    Also used by ``families.py``."""

    def __init__(
        self,
        model: nnx.Module,
        parts: list[str],
        inputs: tuple[jax.Array, jax.Array],
        targets: tuple[jax.Array, ...],
        loss: Callable[..., jax.Array],
    ):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self.n_params = sum(x.size for x in jax.tree.leaves(params))
        tx = optax.adamw(1e-5, weight_decay=0.01)

        def logits_fn(p, input_ids, attention_mask):
            m = nnx.merge(graphdef, p, rest)
            return m(input_ids, attention_mask, deterministic=True).logits

        def loss_fn(p, input_ids, attention_mask, *target):
            return loss(logits_fn(p, input_ids, attention_mask).astype(jnp.float32), *target)

        def train_step(p, opt_state, *batch):
            value, grads = jax.value_and_grad(loss_fn)(p, *batch)
            updates, opt_state = tx.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state, value

        self.params, self.opt_state = params, tx.init(params)
        self.compile_s: dict[str, float] = {}
        self.fns: dict[str, Callable[[], Any]] = {}
        if "forward" in parts:
            fwd = self._compile("forward", jax.jit(logits_fn), params, *inputs)
            self.fns["forward"] = lambda: fwd(self.params, *inputs)
        if "grad" in parts:
            vg = jax.jit(jax.value_and_grad(loss_fn))
            vg = self._compile("grad", vg, params, *inputs, *targets)
            self.fns["grad"] = lambda: vg(self.params, *inputs, *targets)
        if "train" in parts:
            step = jax.jit(train_step, donate_argnums=(0, 1))
            step = self._compile("train", step, params, self.opt_state, *inputs, *targets)
            self.fns["train"] = lambda: self._train(step, *inputs, *targets)
        self.logits = np.asarray(jax.jit(logits_fn)(params, *inputs), np.float32)

    def _compile(self, part: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        compiled = fn.lower(*args).compile()
        self.compile_s[part] = time.perf_counter() - start
        return compiled

    def _train(self, step: Any, *batch: jax.Array) -> jax.Array:
        self.params, self.opt_state, loss = step(self.params, self.opt_state, *batch)
        return loss

    def run(self, part: str) -> None:
        jax.block_until_ready(self.fns[part]())


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy of the integer ``labels``, averaged over the batch."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class MiniLMBench(JaxBench):
    """jaxprune's MiniLM with its classification head; ``head`` holds that head's weights."""

    def __init__(self, args: argparse.Namespace, batch: dict[str, np.ndarray]):
        dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
        model = jaxprune.hf.load_pretrained(
            NAME, head="sequence-classification", num_labels=NUM_LABELS, dtype=dtype
        ).model
        self.cfg = model.cfg
        b = {k: jnp.asarray(v) for k, v in batch.items()}
        inputs = (b["input_ids"], b["attention_mask"])
        super().__init__(model, args.parts, inputs, (b["labels"],), cross_entropy)
        classifier = nnx.to_pure_dict(self.params)["classifier"]
        self.head = {k: np.array(v) for k, v in classifier.items()}


class TorchBench:
    """transformers' ``AutoModelForSequenceClassification`` on the same folder and head."""

    def __init__(self, args: argparse.Namespace, batch: dict[str, np.ndarray], head: dict | None):
        import contextlib

        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForSequenceClassification

        self.torch, self.version = torch, (torch.__version__, transformers.__version__)
        torch.set_num_threads(args.threads)
        transformers.logging.set_verbosity_error()  # "newly initialized" head warning
        folder = jaxprune.hf.resolve(NAME)
        config = AutoConfig.from_pretrained(
            folder,
            num_labels=NUM_LABELS,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            classifier_dropout=0.0,
        )
        model = AutoModelForSequenceClassification.from_pretrained(folder, config=config)
        if head is not None:  # jaxprune's head: both sides compute the same function
            with torch.no_grad():
                model.classifier.weight.copy_(torch.from_numpy(head["kernel"].T.copy()))
                model.classifier.bias.copy_(torch.from_numpy(head["bias"]))
        self.attn = model.config._attn_implementation
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
        self.inputs = {
            k: torch.from_numpy(batch[k].astype(np.int64)) for k in ("input_ids", "attention_mask")
        }
        self.labels = torch.from_numpy(batch["labels"].astype(np.int64))
        if args.dtype == "bfloat16":
            self.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            self.autocast = contextlib.nullcontext
        self.fns = {"forward": self._forward, "grad": self._grad, "train": self._train}
        with torch.inference_mode(), self.autocast():
            model.eval()
            self.logits = model(**self.inputs).logits.float().numpy()

    def _forward(self) -> None:
        self.model.eval()
        with self.torch.inference_mode(), self.autocast():
            self.model(**self.inputs).logits.sum().item()

    def _grad(self) -> None:
        self.model.train()  # dropout probabilities are 0
        self.model.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.model(**self.inputs).logits.float()
        loss = self.torch.nn.functional.cross_entropy(logits, self.labels)
        loss.backward()
        loss.item()

    def _train(self) -> None:
        self._grad()
        self.opt.step()

    def run(self, part: str) -> None:
        self.fns[part]()


def system_cpu_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux), or None where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_load(fn: Callable[[], Any]) -> tuple[Any, float | None]:
    """Runs ``fn``; also returns the CPU cores other processes used meanwhile, on average."""
    wall, own, total = time.perf_counter(), time.process_time(), system_cpu_seconds()
    out = fn()
    end_total = system_cpu_seconds()
    if total is None or end_total is None:
        return out, None
    own = time.process_time() - own
    return out, max(0.0, (end_total - total - own) / (time.perf_counter() - wall))


def measure(
    benches: dict[str, Any], args: argparse.Namespace
) -> dict[tuple[str, str], list[float]]:
    """Seconds per call of every (part, framework), interleaved within each round."""
    for part in args.parts:  # warm-up: first calls allocate, and torch picks kernels
        for bench in benches.values():
            bench.run(part)
    samples: dict[tuple[str, str], list[float]] = {(p, f): [] for p in args.parts for f in benches}
    for _ in range(args.repeats):
        for part in args.parts:
            for name, bench in benches.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    bench.run(part)
                samples[part, name].append((time.perf_counter() - start) / args.steps)
    return samples


def matmul_reference(tokens: int, cfg: Any, threads: int, calls: int = 20) -> list[str]:
    """The libraries' own float32 matmul throughput at the model's dense shapes, jitted
    ``jnp.dot`` (XLA:CPU) against ``torch.matmul`` (2 intra-op threads as the step), best
    of 3 x ``calls``: the ceiling a model step's jax/torch ratio sits under when the dense
    layers dominate it."""
    import torch

    torch.set_num_threads(threads)
    h, f = cfg.hidden_size, cfg.intermediate_size
    dot = jax.jit(jnp.dot)
    lines = []
    for k, n in ((h, h), (h, f), (f, h)):
        rng = np.random.default_rng(0)
        a, b = rng.random((tokens, k), np.float32), rng.random((k, n), np.float32)
        ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
        calls_of = {
            "jax": lambda ja=ja, jb=jb: dot(ja, jb).block_until_ready(),
            "torch": lambda ta=ta, tb=tb: torch.matmul(ta, tb),
        }
        seconds = {}
        for name, call in calls_of.items():
            call()
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                best = min(best, (time.perf_counter() - start) / calls)
            seconds[name] = best
        gflop = 2 * tokens * k * n / 1e9
        lines.append(
            f"matmul {tokens}x{k} @ {k}x{n}: jax {gflop / seconds['jax']:.0f} GFLOP/s, torch "
            f"{gflop / seconds['torch']:.0f} GFLOP/s, jax/torch "
            f"{seconds['torch'] / seconds['jax']:.2f}x"
        )
    return lines


def print_table(
    samples: dict[tuple[str, str], list[float]], tokens: int, flops: float, parts: list[str]
) -> None:
    print(
        f"{'part':<8} {'framework':<9} {'median s':>9} {'min':>7} {'max':>7} "
        f"{'tokens/s':>9} {'GFLOP/s':>8} {'jax/torch':>10}"
    )
    for part in parts:
        both = (part, "jax") in samples and (part, "torch") in samples
        for fw, label in (("jax", "jaxprune"), ("torch", "torch")):
            s = samples.get((part, fw))
            if s is None:
                continue
            med = statistics.median(s)
            part_flops = flops * (1 if part == "forward" else 3)
            ratio = ""
            if both and fw == "jax":
                per_round = [t / j for j, t in zip(s, samples[part, "torch"], strict=True)]
                ratio = f"{statistics.median(per_round):.2f}x"
            print(
                f"{part:<8} {label:<9} {med:>9.3f} {min(s):>7.3f} {max(s):>7.3f} "
                f"{tokens / med:>9.0f} {part_flops / med / 1e9:>8.1f} {ratio:>10}"
            )


def main() -> None:
    start = time.perf_counter()
    args = parse_args()
    if args.xla_flags is not None:
        reexec_with_xla_flags(args.xla_flags)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_start = os.getloadavg()
    patch_jaxprune(args)
    batch = make_batch(args.batch, args.seq, vocab=30522)
    benches: dict[str, Any] = {}
    head = None
    if "jax" in args.frameworks:
        benches["jax"] = MiniLMBench(args, batch)
        head = benches["jax"].head
    if "torch" in args.frameworks:
        benches["torch"] = TorchBench(args, batch, head)
    samples, others = other_load(lambda: measure(benches, args))

    tokens = args.batch * args.seq
    real = int(batch["attention_mask"].sum())
    device = jax.devices()[0]
    print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}", end="")
    if "torch" in benches:
        tb = benches["torch"]
        print(f"; torch {tb.version[0]} ({args.threads} threads, attention {tb.attn}), ", end="")
        print(f"transformers {tb.version[1]}", end="")
    print()
    print(
        f"device: {device.platform}, {_cores()} of {os.cpu_count()} CPU cores usable; "
        f"XLA_FLAGS={_xla_flags()!r}"
    )
    print(f"command: {command_line()}")
    print(
        f"variant: dtype {args.dtype}, attention {args.attention}, dense {args.dense}, "
        f"gelu {args.gelu}; "
        f"{args.repeats} rounds x {args.steps} call(s)"
    )
    busy = "unknown" if others is None else f"{others:.2f}"
    print(
        f"machine: load average (1 min) {load_start[0]:.2f} before; other processes used "
        f"{busy} cores while timing (re-run if above ~0.1 + cores left out by taskset)"
    )
    if "jax" in benches:
        jb = benches["jax"]
        print(
            f"model: all-MiniLM-L6-v2 + {NUM_LABELS}-label head, {jb.n_params / 1e6:.1f}M params; "
            f"batch {args.batch} x seq {args.seq} = {tokens} tokens ({real} not padding)"
        )
        compile_s = ", ".join(f"{k} {v:.1f} s" for k, v in jb.compile_s.items())
        print(f"jax compile time: {compile_s}")
        if "torch" in benches:
            diff = np.abs(jb.logits - benches["torch"].logits).max()
            print(f"check: max |logits jaxprune - torch| = {diff:.2e}")
        flops = model_flops(jb.cfg, args.batch, args.seq)
    else:
        flops = model_flops(_MiniLMShape, args.batch, args.seq)
    print()
    print_table(samples, tokens, flops, args.parts)
    if {"jax", "torch"} <= set(benches):
        print()
        for line in matmul_reference(tokens, benches["jax"].cfg, args.threads):
            print(line)
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")


class _MiniLMShape:
    hidden_size, intermediate_size, num_hidden_layers = 384, 1536, 6


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what taskset leaves us
    except AttributeError:
        return os.cpu_count() or 1


def _xla_flags() -> str:
    return os.environ.get("XLA_FLAGS", "")


if __name__ == "__main__":
    main()
