"""Misuse of the recipes, the CLI, the loop, ``hf`` and ``export`` is refused by a named error.

Every test here is one misuse of issue 17 (the docstring says which when it is one of the
issue's numbered cases): it is refused by an error whose message names the problem, before
anything expensive runs (the ``no_loading`` fixture fails a test that loads a model or data),
and never turns into a silent wrong result. ``docs/reliability.md`` lists them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fixtures import tiny_job

from jaxprune import cli, data, export, hf, recipes
from jaxprune.recipes import Job
from jaxprune.train import CheckpointError
from jaxprune.train.loop import RunConfigError, check_resumable

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "experiments" / "configs" / "demo.py"


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory) -> tuple[Job, pathlib.Path, dict]:
    """One finished tiny run (job, folder, result); tests work on copies of the folder."""
    job = tiny_job(world)
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    return job, run_dir, recipes.run(job, run_dir)


def copy_of(finished, tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(finished[1], tmp_path / "run"))


def snapshot(folder: pathlib.Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if a model or a data split is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"loaded {args} before refusing the job")

    monkeypatch.setattr(hf, "load_pretrained", refuse)
    monkeypatch.setattr(data, "load", refuse)


# 1. A changed job in an old run folder returned the old result ---------------------------


def test_a_changed_job_is_refused_before_anything_is_overwritten(finished, tmp_path, no_loading):
    """Issue 17: run(sparsity=0.5) then run(sparsity=0.7) in one folder resumed at step 12 and
    returned sparsity 0.5 while config.json and result.json said 0.7."""
    job, _, _ = finished
    run_dir = copy_of(finished, tmp_path)
    before = snapshot(run_dir)
    changed = recipes.with_options(dataclasses.replace(job, sparsity=0.7, steps=20), begin=0.2)
    with pytest.raises(RunConfigError, match="restart=True") as err:
        recipes.run(changed, run_dir)
    message = str(err.value)
    for diff in ("sparsity: 0.5 -> 0.7", "steps: 12 -> 20", "method_options.begin: '(absent)'"):
        assert diff in message
    assert snapshot(run_dir) == before


def test_fields_that_cannot_change_the_result_resume(finished, world, tmp_path):
    """The fields of RESUMABLE_CHANGES (here label, eval_batch_size, data_dir, fsdp) may
    change: the run resumes at its last step with the same result."""
    job, _, result = finished
    run_dir = copy_of(finished, tmp_path)
    moved = shutil.copytree(world["data"] / "glue" / "SST-2", tmp_path / "data/glue/SST-2")
    logged = (run_dir / "metrics.jsonl").read_text()
    again = recipes.run(
        dataclasses.replace(
            job, label="renamed", eval_batch_size=4, data_dir=str(moved.parents[1]), fsdp=True
        ),
        run_dir,
    )
    assert again["sparsity"] == result["sparsity"] == 0.5
    assert again["dev"] == pytest.approx(result["dev"])
    assert json.loads((run_dir / "config.json").read_text())["label"] == "renamed"
    assert (run_dir / "metrics.jsonl").read_text() == logged  # resumed at step 12: no step ran


def test_checkpoints_without_config_json_are_refused(finished, tmp_path, no_loading):
    job, _, _ = finished
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "config.json").unlink()
    with pytest.raises(RunConfigError, match=r"holds checkpoints but no config\.json"):
        recipes.run(job, run_dir)


def test_check_resumable_compares_nested_keys_and_skips_may_differ(tmp_path):
    """train.fit's check: generic over any resolved_config."""
    (tmp_path / "checkpoints" / "latest" / "3").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps({"lr": 1, "opt": {"b1": 0.9}, "name": "a"}))
    check_resumable(tmp_path, {"lr": 1.0, "opt": {"b1": 0.9}, "name": "b"}, {"name"})
    with pytest.raises(RunConfigError, match=r"opt\.b1: 0\.9 -> 0\.8\)"):
        check_resumable(tmp_path, {"lr": 1, "opt": {"b1": 0.8}, "name": "a"})
    check_resumable(tmp_path / "elsewhere", {"lr": 2})  # nothing to resume: passes


def test_restart_starts_fresh(finished, tmp_path):
    job, _, _ = finished
    run_dir = copy_of(finished, tmp_path)
    result = recipes.run(dataclasses.replace(job, sparsity=0.75), run_dir, restart=True)
    assert result["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert result["job"]["sparsity"] == 0.75
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 13))  # the old run's lines are gone


def test_a_corrupted_checkpoint_raises_and_loses_nothing(finished, tmp_path):
    job, _, _ = finished
    run_dir = copy_of(finished, tmp_path)
    latest = run_dir / "checkpoints" / "latest"
    step = max(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    metadata = latest / str(step) / "state" / "_METADATA"
    metadata.write_bytes(metadata.read_bytes()[: metadata.stat().st_size // 2])
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match="cannot restore"):
        recipes.run(job, run_dir)
    assert snapshot(run_dir) == before


# 2. Jobs that cannot run are refused before anything is loaded ----------------------------


def case(id: str, changes: dict, error: type, match: str, **options):
    return pytest.param(changes, options, error, match, id=id)


@pytest.mark.parametrize(
    ("changes", "options", "error", "match"),
    [
        case("unknown-method", {"method": "pinz"}, ValueError, "method='pinz' is not a method"),
        case(
            "unknown-option",
            {},
            ValueError,
            r"method_options\.nope: magnitude has no option 'nope'",
            nope=1,
        ),
        case(
            "option-type",
            {},
            ValueError,
            r"method_options\.begin: magnitude expects float, got 'soon'",
            begin="soon",
        ),
        case(
            "missing-teacher",
            {"method": "sparsebert"},
            ValueError,
            "teacher: sparsebert distils from a fine-tuned dense teacher",
        ),
        case("unused-teacher", {"teacher": "x"}, ValueError, "teacher='x': magnitude uses no"),
        case("unknown-task", {"task": "sst3"}, ValueError, "no recipe for task 'sst3'"),
        case("task-case", {"task": "SST2"}, ValueError, r"task='SST2': task names are lower"),
        case(
            "missing-model",
            {"model": "/no/such/model"},
            FileNotFoundError,
            "model='/no/such/model': no such folder",
        ),
        case("encoder-on-d2t", {"task": "e2e"}, ValueError, "bert checkpoint; task e2e needs GPT"),
        case("subset-below-batch", {"train_subset": 2}, ValueError, "train_subset=2 is smaller"),
        case(
            "squad-stride",
            {"task": "squad", "doc_stride": 32},
            ValueError,
            "doc_stride=32 must be below max_length=32",
        ),
        case(
            "pack-non-glue",
            {"task": "conll2003", "pack": True},
            ValueError,
            "pack=True packs sentence-level GLUE examples",
        ),
        case(
            "pins-before-its-window",
            {"method": "pins", "steps": 10},
            ValueError,
            r"pins: pruning begins at step 1 .*\(--set method_options.begin=10\)",
        ),
        case(
            "best-teacher-without-eval",
            {"method": "pins", "eval_every": None},
            ValueError,
            "eval_every: pins with teacher_mode='best'",
            teacher_mode="best",
        ),
    ],
)
def test_a_job_that_cannot_run_is_refused_before_loading(
    world, tmp_path, no_loading, changes, options, error, match
):
    job = recipes.with_options(tiny_job(world, **changes), **options)
    with pytest.raises(error, match=match):
        recipes.run(job, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_gpt2_on_a_glue_task_is_refused(world, no_loading):
    with pytest.raises(ValueError, match="is a gpt2 checkpoint; task sst2 needs an encoder"):
        recipes.evaluate(tiny_job(world, model=str(world["gpt2"])))


def test_a_folder_without_config_json_is_refused(world, tmp_path, no_loading):
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        recipes.evaluate(tiny_job(world, model=str(tmp_path)))


@pytest.mark.parametrize("method, options", [("pins", {}), ("magnitude", {"objective": "kd"})])
def test_logit_distillation_on_a_regression_task_is_refused(world, no_loading, method, options):
    teacher = {"teacher": str(world["bert"])} if options else {}
    job = recipes.with_options(tiny_job(world, method=method, task="stsb", **teacher), **options)
    with pytest.raises(ValueError, match=f"task='stsb': {method} with objective .* one score"):
        recipes.validate(job)


@pytest.mark.parametrize("task", ["conll2003", "squad"])
def test_sparsebert_on_token_and_span_tasks_is_refused(world, no_loading, task):
    job = tiny_job(world, method="sparsebert", teacher=str(world["bert"]), task=task, doc_stride=8)
    with pytest.raises(ValueError, match=f"task='{task}': sparsebert's prediction loss"):
        recipes.validate(job)


def test_sparsebert_on_packed_rows_is_refused(world, no_loading):
    job = tiny_job(world, method="sparsebert", teacher=str(world["bert"]), pack=True)
    with pytest.raises(ValueError, match="pack=True: sparsebert's MSE terms"):
        recipes.validate(job)


def test_a_batch_that_does_not_split_over_the_devices_is_refused(world, monkeypatch, no_loading):
    monkeypatch.setattr("jax.device_count", lambda: 4)
    with pytest.raises(ValueError, match=r"batch_size=6 is not divisible .* \(4 of 4 devices"):
        recipes.validate(tiny_job(world, batch_size=6))
    with pytest.raises(ValueError, match="model_parallel=3 does not divide the 4 devices"):
        recipes.validate(tiny_job(world, model_parallel=3))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("eval_subset", 0, "eval_subset must be >= 1 or None, got 0"),
        ("train_subset", 0, "train_subset must be >= 1 or None"),
        ("eval_every", 0, "eval_every must be >= 1 or None"),
        ("learning_rate", -1e-4, "learning_rate must be > 0"),
        ("learning_rate", float("nan"), "learning_rate must be > 0"),
        ("weight_decay", -0.1, "weight_decay must be >= 0"),
        ("model_parallel", 0, "model_parallel must be >= 1"),
    ],
    ids=[
        "eval_subset=0",
        "train_subset=0",
        "eval_every=0",
        "learning_rate<0",
        "learning_rate=nan",
        "weight_decay<0",
        "model_parallel=0",
    ],
)
def test_a_field_out_of_range_is_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        Job(**{field: value})


# 3. Inputs found wrong while loading: named, before training --------------------------------


def test_missing_data_files_are_named_before_the_model_loads(world, tmp_path, monkeypatch):
    monkeypatch.setattr(hf, "load_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(FileNotFoundError, match=r"expected .*glue/SST-2/dev\.tsv"):
        recipes.run(tiny_job(world, data_dir=str(tmp_path)), tmp_path / "run")


def test_a_truncated_data_file_is_named(world, tmp_path, monkeypatch):
    monkeypatch.setattr(hf, "load_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    squad = tmp_path / "squad"
    shutil.copytree(world["data"] / "squad", squad)
    dev = squad / "dev-v1.1.json"
    dev.write_text(dev.read_text()[:200])
    with pytest.raises(data.DataFormatError, match=r"dev-v1\.1\.json:1: invalid JSON"):
        recipes.run(
            tiny_job(world, task="squad", data_dir=str(tmp_path), doc_stride=8), tmp_path / "run"
        )


def test_fewer_training_rows_than_a_batch_are_refused(world, tmp_path):
    """The fixture's SST-2 has 24 rows: no batch of 32 (fit divided by zero batches)."""
    with pytest.raises(
        ValueError, match="gives 24 examples, fewer than one batch of batch_size=32"
    ):
        recipes.run(tiny_job(world, batch_size=32, train_subset=None), tmp_path / "run")


def test_max_length_past_the_position_table_is_refused(world):
    """Positions past the table embed as NaN: argmax of NaN logits scored class 0."""
    with pytest.raises(ValueError, match="max_length=200 exceeds the 128 positions"):
        recipes.evaluate(tiny_job(world, max_length=200))


# 4. The command line: one line, no traceback, before loading ----------------------------------


def one_line_exit(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("jaxprune: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        pytest.param(["method=pinz"], "method='pinz' is not a method", id="unknown-method"),
        pytest.param(
            ["method_options.nope=1"],
            "method_options.nope: pins has no option 'nope'",
            id="unknown-option",
        ),
        pytest.param(
            ["method=sparsebert", "pack=False"], "teacher: sparsebert distils", id="no-teacher"
        ),
        pytest.param(["task=sst3"], "no recipe for task 'sst3'", id="unknown-task"),
        pytest.param(["pack=yes"], "--set pack: expected bool, got 'yes'", id="bool-type"),
        pytest.param(["steps=True"], "--set steps: expected int | None, got True", id="int-type"),
        pytest.param(["stpes=3"], "unknown field 'stpes' (did you mean 'steps'?)", id="typo"),
        pytest.param(["method_options={}"], "set one option at a time", id="options-whole"),
        pytest.param(["sparsity=1.5"], "sparsity must be in [0, 1), got 1.5", id="range"),
    ],
)
def test_cli_train_refuses_bad_input_in_one_line(tmp_path, no_loading, sets, match):
    """Issue 17: a bad method, option or missing teacher failed after ~25 s of loading."""
    argv = ["train", "--config", f"{DEMO}:pins", "--workdir", str(tmp_path)]
    message = one_line_exit(argv + [a for s in sets for a in ("--set", s)])
    assert match in message, message


def test_cli_refuses_bad_configs_in_one_line(tmp_path, no_loading):
    (tmp_path / "empty.py").write_text("X = 1\n")
    (tmp_path / "broken.py").write_text("VARIANTS = {\n")
    (tmp_path / "wrong.py").write_text("VARIANTS = {'a': dict(task='sst2')}\n")
    assert "must define VARIANTS" in one_line_exit(["list", str(tmp_path / "empty.py")])
    assert "failed to load: SyntaxError" in one_line_exit(["list", str(tmp_path / "broken.py")])
    assert "VARIANTS['a'] is not a Job" in one_line_exit(["list", str(tmp_path / "wrong.py")])
    assert "does not exist" in one_line_exit(["list", str(tmp_path / "none.py")])
    typo = one_line_exit(["train", "--config", f"{DEMO}:pin"])
    assert "no variant 'pin' (did you mean 'pins'?)" in typo
    assert "no run folder" in one_line_exit(["report", str(tmp_path / "none")])
    missing = one_line_exit(["eval", "--model", str(tmp_path / "none")])
    assert "no such folder" in missing


def test_cli_half_an_explicit_cluster_is_refused(tmp_path, no_loading):
    argv = ["train", "--config", f"{DEMO}:pins", "--workdir", str(tmp_path), "--coordinator", "h:1"]
    assert "--process-id go together" in one_line_exit(argv)


def test_cli_eval_of_an_unfinished_run_is_refused(finished, tmp_path, no_loading):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "result.json").unlink()
    message = one_line_exit(["eval", "--run", str(run_dir)])
    assert "is not a finished run (it has checkpoints: finish it with jaxprune train)" in message


def test_cli_train_refuses_a_changed_job_then_restarts_quietly(finished, tmp_path, caplog):
    """Issue 17: a changed --set resumed the old run; orbax flooded the console at INFO."""
    job, _, _ = finished
    config = tmp_path / "tinycfg.py"
    fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}
    config.write_text(f"from jaxprune.recipes import Job\nVARIANTS = {{'m': Job(**{fields!r})}}\n")
    run_dir = pathlib.Path(shutil.copytree(finished[1], tmp_path / "runs" / "tinycfg" / "m"))
    argv = ["train", "--config", f"{config}:m", "--workdir", str(tmp_path / "runs")]
    logging.getLogger("absl").setLevel(logging.NOTSET)
    caplog.set_level(logging.INFO)
    message = one_line_exit([*argv, "--set", "sparsity=0.75"])
    assert "sparsity: 0.5 -> 0.75" in message and "--restart" in message
    assert cli.main([*argv, "--set", "sparsity=0.75", "--restart"]) == 0
    assert json.loads((run_dir / "result.json").read_text())["job"]["sparsity"] == 0.75
    noisy = [r for r in caplog.records if r.name.startswith("absl") and r.levelno < logging.WARNING]
    assert not noisy, noisy[0].getMessage()


def run_python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, text=True, capture_output=True, timeout=300
    )


def test_cli_error_is_one_line_on_stderr_without_traceback():
    proc = run_python(
        "-m", "jaxprune.cli", "train", "--config", f"{DEMO}:pins", "--set", "method=pinz"
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("jaxprune: method='pinz'")


def test_cli_list_into_a_closed_pipe_exits_quietly():
    """Issue 17: `jaxprune list ... | head -3` ended in BrokenPipeError."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxprune.cli", "list", "experiments/configs/small_repro.py"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 0
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr, stderr


def test_importing_jaxprune_leaves_absl_logging_alone():
    code = (
        "import logging, jaxprune, jaxprune.recipes, jaxprune.cli, jaxprune.train\n"
        "print(logging.getLogger('absl').level)"
    )
    assert run_python("-c", code).stdout.strip() == "0"


# 5. hf and export ----------------------------------------------------------------------------


def test_a_task_passed_as_the_head_is_named(world):
    """Issue 17: load_pretrained("minilm", task="sst2") failed confusingly (task meant head)."""
    with pytest.raises(ValueError, match="head='sst2' is a task, not a model head: sst2 uses "
                       "head='sequence-classification'"):  # fmt: skip
        hf.load_pretrained("/no/such/folder", head="sst2")
    with pytest.raises(ValueError, match="squad uses head='question-answering'"):
        hf.load_pretrained(world["bert"], head="squad")


def test_an_unknown_head_lists_the_heads():
    with pytest.raises(ValueError, match=r"unknown head 'clasifier'; choose from \['base', "):
        hf.load_pretrained("/no/such/folder", head="clasifier")


def test_a_head_the_architecture_lacks_is_refused(world):
    with pytest.raises(ValueError, match="gpt2 checkpoint has no 'question-answering' head"):
        hf.load_pretrained(world["gpt2"], head="question-answering")
    with pytest.raises(ValueError, match="bert checkpoint has no 'causal-lm' head"):
        hf.load_pretrained(world["bert"], head="causal-lm")
    with pytest.raises(ValueError, match="num_labels must be >= 1"):
        hf.load_pretrained(world["bert"], num_labels=0)


def test_export_save_into_a_folder_is_refused_before_writing(tmp_path):
    """Issue 17: export.save to an existing folder raised a raw SafetensorError."""
    params = {"dense": {"kernel": np.eye(4, dtype=np.float32)}}
    with pytest.raises(IsADirectoryError, match="is a folder; give a file path such as"):
        export.save(tmp_path, params)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.save(tmp_path / "no" / "model.safetensors", params)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.load(tmp_path / "model.safetensors")
    with pytest.raises(IsADirectoryError, match="reads one file"):
        export.load(tmp_path)
