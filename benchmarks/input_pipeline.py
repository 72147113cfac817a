"""Input pipeline throughput per task family on one host CPU core, against what a TPU v4 eats.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python benchmarks/input_pipeline.py
        [--data-dir ../shared/data] [--plan experiments/results/scale/plan.json]
        [--cases sst2 sst2-packed mrpc mrpc-packed squad conll2003 e2e]
        [--core 0] [--local-devices 4] [--steps 300] [--repeats 3] [--sim-steps 200]

The script pins itself to one CPU core (``os.sched_setaffinity(0, {core})``, then re-executes
so that every thread it will start inherits that core; OMP / OpenBLAS / MKL / Rayon
(tokenizers) threads 1, ``TOKENIZERS_PARALLELISM=false``, XLA:CPU without its Eigen pool)
and gives XLA ``--local-devices`` CPU devices, one TPU v4 host's 4 chips. Each case is a
training set of the recipes at its config's batch size and length
(``experiments/configs/pins_glue.py`` / ``pins_tasks.py``), and two stages are timed apart:

(a) **read + encode**, once per run: ``jaxprune.data.load`` of the raw files and the
    recipe's encode function (``encode_glue``, ``encode_squad_train``, ``encode_ner``,
    ``encode_d2t``), in examples/s (SQuAD: 384-token windows) and in seconds per
    epoch-equivalent (the published training set's size at that rate). SQuAD's train file
    is not in the local data: its dev file stands in (same windows, same code).
(b) **per step**, what must keep up with the accelerator: iterating ``data.Batcher`` (length
    buckets or ``pack=True``, shuffling, this host's rows) and
    ``jax.make_array_from_process_local_data`` of every model input onto the mesh's batch
    sharding, one call per input as ``recipes.common.train_and_export``'s ``stream`` does,
    each blocked on. In examples/s (valid rows or packed segments) by wall clock and per
    CPU-second of the process (what an unshared core gives), median over ``--repeats``
    epochs of ``--steps`` batches after a short warm-up. ``one put call`` places the same
    batch again with a single call on the whole dict (the function takes pytrees).

**Consumption** (``need``), in examples/s of the whole accelerator; this one host builds
every row of every batch (``process_count`` 1):

- ``plan``: with ``--plan`` (rows of ``jaxprune plan``: ``family``, ``batch_size``,
  ``max_length``, ``devices``, ``step_seconds["tpu-v4"]``, ...), per family the row on
  ``--plan-devices`` devices (8) that eats the most examples/s (``batch_size /
  step_seconds``). 8 v4 chips are two hosts, each building half a batch: the need per host
  is half the one compared here.
- ``analytic``: a TPU v4-8 (4 chips, one host, 275 TFLOP/s bf16 each at 40% utilisation)
  running ``6 x parameters x batch x max_length`` FLOPs per step (BERT-base 110M
  parameters, GPT-2 124M): the brief's estimate, used alone when there is no plan file.
- ``roofline``: the same chips on the batches (b) really made (bucketed and packed rows hold
  fewer positions than ``max_length``), FLOPs or HBM traffic, whichever is longer, at 40%:
  an fp32 AdamW step moves at least 40 bytes per parameter on each data-parallel chip
  (:data:`ADAMW_BYTES_PER_PARAM`): 3.7 ms for BERT-base at 1.2 TB/s, 9.2 ms at 40%. The
  FLOPs take longer only above about 6,100 tokens a batch (SQuAD's 16 x 384), so for
  every other case the analytic need is one no real step reaches.

**Goal: (b) >= 3x the need, on one core.**

(c) **simulated loop**: the training loop blocks on every step's result (``train.fit`` reads
``metrics["finite"]``), so without a prefetcher the host builds the next batch only after
the step: a step costs the accelerator's time plus the host's. Here the consumer sleeps the
projected step (``time.sleep`` releases the core, as a blocked wait does) for each batch of
(b): ``ceiling`` takes batches made beforehand (what the sleep and the loop cost by
themselves), ``direct`` pulls them from the stream, ``prefetch`` through
``jaxprune.data.prefetch`` (a background thread, ``--prefetch`` batches ahead, building and
placing them), then the same placing each batch with one call. Each figure is the share of
the wall time the accelerator computes. It leaves out the host's own work per step
(dispatching the jitted step, logging). ``--switch-interval`` sets Python's GIL switch
interval (default 5 ms) for comparison.

Tokenizers: the embedded all-MiniLM-L6-v2's (``jaxprune.hf.resolve("minilm")``: BERT
uncased WordPiece, bert-base-uncased's vocabulary; CoNLL-2003's config uses bert-base-cased,
whose WordPiece is the same kind). GPT-2's tokenizer is not available offline: data-to-text
uses a byte-level BPE (GPT-2's algorithm and pre-tokenizer) trained on the E2E training
texts, vocabulary ``--bpe-vocab`` (its training time is printed, not counted in (a)).
Needs the local data and no network.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import pathlib
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import datasets
import jax
import numpy as np
from transformers import AutoTokenizer

import jaxprune.data as jd
from jaxprune import hf, train
from jaxprune.data.d2t import pairs
from jaxprune.recipes import common
from jaxprune.recipes.job import Job
from jaxprune.recipes.job import load as load_variant

ROOT = pathlib.Path(__file__).resolve().parents[1]
PINNED = "JAXPRUNE_BENCH_PINNED"
CHIPS_PER_HOST = 4  # a TPU v4 host (v4-8: 4 chips, one JAX device each)
V4_CHIPS, V4_PEAK, V4_HBM, UTILIZATION = 4, 275e12, 1200e9, 0.4
#: HBM bytes an fp32 AdamW step moves per parameter on each data-parallel chip, at least:
#: weights read in the forward and backward passes (8), the gradient written (4), the update
#: reading weights, gradient and both moments (16) and writing weights and moments (12).
ADAMW_BYTES_PER_PARAM = 40
PARAMETERS = {"bert-base-uncased": 110e6, "bert-base-cased": 110e6, "gpt2": 124e6}
GOAL = 3.0

#: case: (config variant, pack). Batch size, length and stride come from the config's Job.
CASES = {
    "sst2": ("experiments/configs/pins_glue.py:sst2-90-pins", False),
    "sst2-packed": ("experiments/configs/pins_glue.py:sst2-90-pins", True),
    "mrpc": ("experiments/configs/pins_glue.py:mrpc-90-pins", False),
    "mrpc-packed": ("experiments/configs/pins_glue.py:mrpc-90-pins", True),
    "squad": ("experiments/configs/pins_tasks.py:squad-90-pins", False),
    "conll2003": ("experiments/configs/pins_tasks.py:conll2003-90-pins", False),
    "e2e": ("experiments/configs/pins_tasks.py:e2e-90-pins", False),
}
FAMILY = {"sst2": "glue", "mrpc": "glue", "squad": "squad", "conll2003": "ner", "e2e": "d2t"}
#: Published training-set sizes (SQuAD: 384-token windows at stride 128).
TRAIN_EXAMPLES = {"sst2": 67349, "mrpc": 3668, "squad": 88641, "conll2003": 14041, "e2e": 42061}
#: The split read: SQuAD's train file is not in the local data; its dev file stands in.
SPLIT = {"squad": "validation"}


def parse_args() -> argparse.Namespace:
    default_dir = os.environ.get(jd.ENV_VAR) or os.path.relpath(ROOT.parent / "shared" / "data")
    default_plan = ROOT / "experiments" / "results" / "scale" / "plan.json"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_dir)
    parser.add_argument(
        "--plan",
        default=os.path.relpath(default_plan),
        help="rows of `jaxprune plan` (used when the file exists; else the analytic v4-8)",
    )
    parser.add_argument("--plan-devices", type=int, default=8, help="plan rows on this many")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--core", type=int, default=0, help="the one CPU core to run on")
    parser.add_argument("--local-devices", type=int, default=CHIPS_PER_HOST)
    parser.add_argument("--steps", type=int, default=300, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per case")
    parser.add_argument("--sim-steps", type=int, default=200, help="steps of the simulated loop")
    parser.add_argument("--prefetch", type=int, default=2, help="prefetch queue size")
    parser.add_argument("--bpe-vocab", type=int, default=8192)
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval in seconds (default: Python's, 0.005)",
    )
    return parser.parse_args()


def pin_and_reexec(core: int, devices: int) -> None:
    """One core for every thread: set the thread counts and the affinity, then start over
    (affinity and environment carry over ``exec``; threads the imports started do not)."""
    want = f"{core}:{devices}"
    if os.environ.get(PINNED) == want:
        return
    env = {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "JAX_PLATFORMS": "cpu",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "XLA_FLAGS": (
            f"--xla_force_host_platform_device_count={devices} "
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ),
        PINNED: want,
    }
    os.environ.update(env)
    os.sched_setaffinity(0, {core})
    os.execv(sys.executable, [sys.executable, *sys.argv])


def command_line() -> str:
    return "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 " + shlex.join(
        [os.path.relpath(sys.executable), *sys.argv]
    )


def threads_off_core(core: int) -> list[str]:
    """Threads of this process allowed on any other core (should be none)."""
    off = []
    for status in pathlib.Path("/proc/self/task").glob("*/status"):
        try:
            allowed = next(
                line.split(":")[1].strip()
                for line in status.read_text().splitlines()
                if line.startswith("Cpus_allowed_list")
            )
        except (OSError, StopIteration):
            continue
        if allowed != str(core):
            off.append(f"{status.parent.name}:{allowed}")
    return off


def core_seconds(core: int) -> float | None:
    """Busy CPU seconds of ``core`` since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            line = next(x for x in f if x.startswith(f"cpu{core} "))
    except (OSError, StopIteration):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = [
        int(x) for x in (line.split()[1:] + ["0"] * 8)[:8]
    ]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CoreWatch:
    """How much of the pinned core other processes took while timing."""

    def __init__(self, core: int) -> None:
        self.core, self.other, self.wall = core, 0.0, 0.0

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        wall, own, busy = time.perf_counter(), time.process_time(), core_seconds(self.core)
        out = fn(*args)
        end = core_seconds(self.core)
        wall = time.perf_counter() - wall
        if busy is not None and end is not None:
            self.other += max(0.0, end - busy - (time.process_time() - own))
            self.wall += wall
        return out

    @property
    def share(self) -> float | None:
        return self.other / self.wall if self.wall else None


# ---------------------------------------------------------------------------------------
# consumption


@dataclasses.dataclass(frozen=True)
class Consumption:
    """Examples/s an accelerator eats (all its hosts together), and where that comes from."""

    examples_per_s: float
    step_seconds: float
    max_length: int
    source: str


def analytic(job: Job) -> Consumption:
    tokens = job.batch_size * job.max_length
    step = 6 * PARAMETERS[job.model] * tokens / (V4_CHIPS * V4_PEAK * UTILIZATION)
    source = (
        f"analytic v4-8: 6 x {PARAMETERS[job.model] / 1e6:.0f}M params x {job.batch_size}x"
        f"{job.max_length} tokens / (4 x 275 TFLOP/s x {UTILIZATION:.0%}) = "
        f"{step * 1e3:.2f} ms/step"
    )
    return Consumption(job.batch_size / step, step, job.max_length, source)


def read_plan(path: pathlib.Path) -> list[dict]:
    rows = json.loads(path.read_text())
    if isinstance(rows, dict):
        rows = rows.get("rows")
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of rows (or {{'rows': [...]}})")
    need = ("family", "batch_size", "max_length", "devices", "step_seconds")
    for i, row in enumerate(rows):
        missing = [k for k in need if k not in row]
        if missing:
            raise ValueError(f"{path}: row {i} lacks {missing}")
    return rows


def from_plan(rows: list[dict], family: str, devices: int) -> Consumption | None:
    """The plan row of ``family`` on ``devices`` that eats the most examples/s on tpu-v4."""
    fits = [
        r
        for r in rows
        if r["family"] == family
        and r["devices"] == devices
        and (r["step_seconds"] or {}).get("tpu-v4")
    ]
    if not fits:
        return None
    best = max(fits, key=lambda r: r["batch_size"] / r["step_seconds"]["tpu-v4"])
    step = float(best["step_seconds"]["tpu-v4"])
    variant = (best.get("variants") or ["?"])[0]
    source = (
        f"plan: {best.get('config', '?')}:{variant} ({best.get('layout', '?')}, batch "
        f"{best['batch_size']}x{best['max_length']}) on {devices} v4 chips = "
        f"{step * 1e3:.2f} ms/step"
    )
    return Consumption(best["batch_size"] / step, step, best["max_length"], source)


# ---------------------------------------------------------------------------------------
# stage (a): read + encode


@dataclasses.dataclass
class Encoded:
    features: Any
    raw_rows: int
    read_s: float
    encode_s: float
    pad_id: int

    @property
    def seconds(self) -> float:
        return self.read_s + self.encode_s


def gpt2_like_tokenizer(texts: list[str], vocab: int) -> Any:
    """A byte-level BPE (GPT-2's model and pre-tokenizer) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def encode(task: str, job: Job, tokenizer: Any, data_dir: str) -> Encoded:
    t0 = time.perf_counter()
    rows = jd.load(task, SPLIT.get(task, "train"), data_dir)
    t1 = time.perf_counter()
    if task == "squad":
        feats = jd.encode_squad_train(rows, tokenizer, job.max_length, job.doc_stride)
    elif task == "conll2003":
        feats = jd.encode_ner(rows, tokenizer, job.max_length)
    elif task == "e2e":
        feats = jd.encode_d2t(rows, tokenizer, task, job.max_length)
    else:
        feats = jd.encode_glue(rows, tokenizer, task, job.max_length)
    t2 = time.perf_counter()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Encoded(feats, len(rows), t1 - t0, t2 - t1, pad)


# ---------------------------------------------------------------------------------------
# stage (b): batches onto the devices


@dataclasses.dataclass
class StepRate:
    examples: int = 0
    batches: int = 0
    batcher_s: float = 0.0
    put_s: float = 0.0
    put_one_s: float = 0.0
    cpu_s: float = 0.0
    positions: int = 0  # of this host's batches

    @property
    def wall_s(self) -> float:
        return self.batcher_s + self.put_s


def put(sharding: Any, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """``train_and_export``'s ``stream`` as it is: one call per model input."""
    return {
        k: jax.make_array_from_process_local_data(sharding, v)
        for k, v in common.model_inputs(batch).items()
    }


def put_one_call(sharding: Any, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """The same arrays from one call on the whole dict (the function takes pytrees)."""
    return jax.make_array_from_process_local_data(sharding, common.model_inputs(batch))


def time_epoch(batcher: jd.Batcher, epoch: int, steps: int, sharding: Any) -> StepRate:
    """Stage (b) over ``steps`` batches of ``epoch``; each batch is also placed a second
    time with :func:`put_one_call` (timed apart, outside ``cpu_s``)."""
    rate = StepRate()
    it = batcher(epoch)
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        batch = next(it, None)
        t1 = time.perf_counter()
        if batch is None:
            break
        jax.block_until_ready(put(sharding, batch))
        t2, c2 = time.perf_counter(), time.process_time()
        jax.block_until_ready(put_one_call(sharding, batch))
        t3 = time.perf_counter()
        rate.batcher_s += t1 - t0
        rate.put_s += t2 - t1
        rate.put_one_s += t3 - t2
        rate.cpu_s += c2 - c0
        rate.examples += int(batch["valid"].sum())
        rate.batches += 1
        rate.positions += batch["input_ids"].size
    return rate


def stream(
    batcher: jd.Batcher, sharding: Any, epochs: int, place: Callable[..., Any] = put
) -> Iterator[dict[str, jax.Array]]:
    for epoch in range(epochs):
        for batch in batcher(epoch):
            yield place(sharding, batch)


def simulate(source: Iterator[Any], step_s: float, steps: int) -> float:
    """Share of the wall time an accelerator taking ``step_s`` a step computes, when the host
    waits for each step before it takes the next batch from ``source``."""
    jax.block_until_ready(next(source))  # start-up (and a prefetcher's first fill) untimed
    time.sleep(0.05)
    start = time.perf_counter()
    for _ in range(steps):
        next(source)
        time.sleep(step_s)  # the step; the loop then reads its result
    return steps * step_s / (time.perf_counter() - start)


def simulations(
    batcher: jd.Batcher, sharding: Any, step_s: float, steps: int, prefetch: int
) -> dict[str, float]:
    """Busy shares: ``ceiling`` (batches made beforehand: the sleep's and loop's own
    overhead), ``direct`` (the stream in the loop's thread), ``prefetch`` (through
    :func:`jaxprune.data.prefetch`), and the same with :func:`put_one_call`."""
    steps = max(20, min(steps, round(2.0 / step_s)))  # about 2 s each
    epochs = 2 + steps // len(batcher)
    ready = list(itertools.islice(stream(batcher, sharding, epochs), steps + 1))
    out = {"ceiling": simulate(iter(ready), step_s, steps)}
    del ready
    out["direct"] = simulate(stream(batcher, sharding, epochs), step_s, steps)
    for name, place in (("prefetch", put), ("prefetch, one put call", put_one_call)):
        ahead = jd.prefetch(stream(batcher, sharding, epochs, place), prefetch)
        try:
            out[name] = simulate(ahead, step_s, steps)
        finally:
            ahead.close()
    return out


# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    job: Job
    pack: bool
    encoded: Encoded
    plan: Consumption | None
    analytic: Consumption
    batcher_init_s: float = 0.0
    devices_used: int = 0
    rates: list[StepRate] = dataclasses.field(default_factory=list)
    busy: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.job.task

    def median(self, fn: Callable[[StepRate], float]) -> float:
        return statistics.median(fn(r) for r in self.rates)

    @property
    def rate(self) -> float:
        """Examples/s of stage (b), wall clock."""
        return self.median(lambda r: r.examples / r.wall_s)

    @property
    def positions_per_example(self) -> float:
        return sum(r.positions for r in self.rates) / sum(r.examples for r in self.rates)

    @property
    def examples_per_batch(self) -> float:
        return sum(r.examples for r in self.rates) / sum(r.batches for r in self.rates)

    def roofline_step(self) -> float:
        """Seconds of a v4-8 step on these batches: FLOPs of the positions a batch really
        holds, or AdamW's HBM traffic on each chip (data parallel), whichever is longer."""
        positions = sum(r.positions for r in self.rates) / sum(r.batches for r in self.rates)
        params = PARAMETERS[self.job.model]
        flops = 6 * params * positions / (V4_CHIPS * V4_PEAK)
        return max(flops, ADAMW_BYTES_PER_PARAM * params / V4_HBM) / UTILIZATION

    def needs(self) -> dict[str, float]:
        """Examples/s: the plan's (if any), the analytic (FLOPs at full ``max_length`` rows)
        and the roofline (:meth:`roofline_step`)."""
        out = {} if self.plan is None else {"plan": self.plan.examples_per_s}
        out["analytic"] = self.analytic.examples_per_s
        out["roofline"] = self.examples_per_batch / self.roofline_step()
        return out


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def main() -> int:
    args = parse_args()
    pin_and_reexec(args.core, args.local_devices)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    datasets.disable_caching()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    watch = CoreWatch(args.core)
    plan_path = pathlib.Path(args.plan)
    plan_rows = read_plan(plan_path) if plan_path.is_file() else None
    print(f"command: {command_line()}")
    print(
        f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices; "
        f"pinned to core {sorted(os.sched_getaffinity(0))} (OMP, OpenBLAS, MKL, Rayon: 1 "
        f"thread; XLA:CPU without Eigen threads); GIL switch interval "
        f"{sys.getswitchinterval() * 1e3:g} ms"
    )
    print(
        f"consumption: {plan_path} ({len(plan_rows)} rows, {args.plan_devices} devices) where "
        "it has the family, and the analytic TPU v4-8 estimate"
        if plan_rows is not None
        else f"consumption: no {plan_path}: the analytic TPU v4-8 estimate"
    )
    bert_tok = AutoTokenizer.from_pretrained(hf.resolve("minilm"))
    encoded: dict[str, Encoded] = {}
    notes: list[str] = []
    cases: list[Case] = []
    for name in args.cases:
        spec, pack = CASES[name]
        _, job = load_variant(str(ROOT / spec))
        task = job.task
        if task not in encoded:
            tok = bert_tok
            if task == "e2e":
                t0 = time.perf_counter()
                raw = jd.load("e2e", "train", args.data_dir)
                sources, targets = pairs(raw, "e2e")
                tok = gpt2_like_tokenizer(sources + targets, args.bpe_vocab)
                notes.append(
                    f"e2e tokenizer: byte-level BPE trained on the E2E train texts, vocabulary "
                    f"{tok.vocab_size}, {time.perf_counter() - t0:.1f} s (not counted in (a))"
                )
            encoded[task] = watch.run(encode, task, job, tok, args.data_dir)
        plan = None if plan_rows is None else from_plan(plan_rows, FAMILY[task], args.plan_devices)
        cases.append(Case(name, job, pack, encoded[task], plan, analytic(job)))
        print(f"  {name}: encoded", flush=True)

    for case in cases:
        t0 = time.perf_counter()
        batcher = jd.Batcher(
            case.encoded.features,
            case.job.batch_size,
            seed=0,
            pad_id=case.encoded.pad_id,
            drop_last=True,
            pack=case.pack,
        )
        case.batcher_init_s = time.perf_counter() - t0
        case.devices_used = math.gcd(batcher.rows, args.local_devices)
        if case.devices_used != args.local_devices:
            notes.append(
                f"{case.name}: {batcher.rows} rows per batch do not split over "
                f"{args.local_devices} devices (make_array_from_process_local_data refuses "
                f"uneven shards; train_and_export would fail the same way): placed on "
                f"{case.devices_used}"
            )
        mesh = train.make_mesh(-1, 1, devices=jax.devices()[: case.devices_used])
        sharding = train.Sharding(mesh).batch
        time_epoch(batcher, 10**6, 5, sharding)  # warm-up: first transfers, page-ins
        case.rates = [
            watch.run(time_epoch, batcher, e, args.steps, sharding) for e in range(args.repeats)
        ]
        for which in ("analytic", "roofline"):
            step = case.examples_per_batch / case.needs()[which]
            case.busy[which] = simulations(batcher, sharding, step, args.sim_steps, args.prefetch)
        print(f"  {case.name}: timed", flush=True)

    print("\n(a) read + encode (once per run)\n")
    print(
        "| task | split read | raw rows | examples | read s | encode s | examples/s "
        "| s per train epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    seen = set()
    for case in cases:
        if case.task in seen:
            continue
        seen.add(case.task)
        e = case.encoded
        rate = len(e.features) / e.seconds
        print(
            f"| {case.task} | {SPLIT.get(case.task, 'train')} | {e.raw_rows:,} | "
            f"{len(e.features):,} | {e.read_s:.2f} | {e.encode_s:.2f} | {fmt(rate)} | "
            f"{TRAIN_EXAMPLES[case.task] / rate:.1f} |"
        )

    print(
        "\n(b) per step: Batcher + make_array_from_process_local_data, examples/s, against "
        "the accelerator's need (ratio: (b) / need)\n"
    )
    print(
        "| case | batch x len | tokens/ex | Batcher | put | (b) | (b) per CPU-s | (b) one put "
        "call | plan need | ratio | analytic need | ratio | roofline need | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    short: dict[str, list[str]] = {}
    for case in cases:
        cells = []
        for which in ("plan", "analytic", "roofline"):
            need = case.needs().get(which)
            if need is None:
                cells += ["-", "-"]
                continue
            cells += [fmt(need), f"{case.rate / need:.1f}x"]
            if case.rate < GOAL * need:
                short.setdefault(which, []).append(case.name)
        print(
            f"| {case.name} | {case.job.batch_size}x{case.job.max_length} | "
            f"{case.positions_per_example:.1f} | "
            f"{fmt(case.median(lambda s: s.examples / s.batcher_s))} | "
            f"{fmt(case.median(lambda s: s.examples / s.put_s))} | {fmt(case.rate)} | "
            f"{fmt(case.median(lambda s: s.examples / s.cpu_s))} | "
            f"{fmt(case.median(lambda s: s.examples / (s.batcher_s + s.put_one_s)))} | "
            + " | ".join(cells)
            + " |"
        )

    print(
        f"\n(c) simulated loop: share of the time the accelerator computes, the host waiting "
        f"on each step; prefetch {args.prefetch} batches ahead\n"
    )
    print(
        "| case | analytic step ms | ceiling | direct | prefetch | + one put call "
        "| roofline step ms | ceiling | direct | prefetch | + one put call |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        cells = []
        for which in ("analytic", "roofline"):
            b = case.busy[which]
            step = case.examples_per_batch / case.needs()[which]
            cells += [f"{step * 1e3:.2f}"] + [f"{v:.1%}" for v in b.values()]
        print(f"| {case.name} | " + " | ".join(cells) + " |")

    print("\nconsumption:")
    for case in cases:
        for c in (case.plan, case.analytic):
            if c is not None:
                print(f"  {case.name}: {fmt(c.examples_per_s)} ex/s <- {c.source}")
    print("\nnotes:")
    for case in cases:
        print(
            f"  {case.name}: Batcher init {case.batcher_init_s:.2f} s (once); "
            f"{sum(r.batches for r in case.rates)} timed batches on {case.devices_used} devices"
        )
    for note in notes:
        print(f"  {note}")
    share = watch.share
    off = threads_off_core(args.core)
    print(
        f"  other processes took {share:.0%} of core {args.core} during (a) and (b)"
        if share is not None
        else "  other processes' share of the core: unknown"
    )
    print(f"  threads of this process allowed off core {args.core}: {off or 'none'}")
    for which in ("plan", "analytic", "roofline"):
        if which == "plan" and plan_rows is None:
            continue
        verdict = f"short: {short[which]}" if which in short else "met by every case"
        print(f"goal (b) >= {GOAL:.0f}x the {which} need: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
