"""Experiment configs, the CLI and the report: every config variant is valid, a one-step dry
run of each config executes on tiny models and fixture data, and the report puts the
papers' numbers beside the runs'."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from jaxprune import cli, recipes, report
from jaxprune.recipes import common, labels
from jaxprune.recipes.job import Job, load_module, override

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.py"))
REFERENCE = ROOT / "experiments" / "reference"


def headed_teacher(world: dict[str, pathlib.Path], task: str) -> pathlib.Path:
    """The tiny BERT saved with ``task``'s classification head (generic label names)."""
    from jaxprune import hf

    names = labels.dataset_labels(task)
    assert names is not None
    head = "token-classification" if task == "conll2003" else "sequence-classification"
    folder = world["data"].parent / "teachers" / f"{head}-{len(names)}"
    if not folder.exists():
        model, params, _ = hf.load_pretrained(world["bert"], head=head, num_labels=len(names))
        hf.save_pretrained(model, params, folder)
    return folder


def tiny(job: Job, world: dict[str, pathlib.Path]) -> Job:
    """``job`` shrunk to one step on tiny models and the fixture data. A teacher that
    classifies is the tiny BERT with that head and generic label names, so where the config
    leaves the order to the teacher's id2label (small_repro: a jaxprune export, which names
    its labels) the identity is declared."""
    model = world["gpt2" if recipes.family(job.task) == "d2t" else "bert"]
    names = labels.dataset_labels(job.task)
    order, teacher = job.teacher_labels, None if job.teacher is None else model
    if teacher is not None and names is not None:
        teacher = headed_teacher(world, job.task)
        order = order or tuple(range(len(names)))
    return dataclasses.replace(
        job,
        model=str(model),
        teacher=None if teacher is None else str(teacher),
        teacher_labels=order,
        data_dir=str(world["data"]),
        steps=1,
        batch_size=4,
        max_length=32,
        doc_stride=8,
        train_subset=16,
        eval_subset=8,
        eval_batch_size=8,
        eval_every=None,
        max_new_tokens=4,
    )


def test_there_are_configs_for_every_paper_table() -> None:
    names = {c.stem for c in CONFIGS}
    assert {
        "smp_table1",
        "smp_table2",
        "sparsebert_glue",
        "movement_table",
        "pins_glue",
        "pins_tasks",
        "demo",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_variant_is_valid(path: pathlib.Path) -> None:
    module = load_module(path)
    rel = path.relative_to(ROOT)
    assert f"jaxprune train --config {rel}" in module.__doc__, "docstring gives no command"
    for name, job in module.VARIANTS.items():
        assert isinstance(job, Job), name
        recipes.family(job.task)  # raises for a task without a recipe
        method = common.method_for(job)  # raises for unknown methods or options
        assert method.teacher != "dense" or job.teacher, f"{name}: needs a teacher"
        if job.reference:
            stem, _, table = job.reference.partition("/")
            published = json.loads((REFERENCE / f"{stem}.json").read_text())["tables"]
            assert table in published or not published, f"{name}: no table {job.reference}"
            assert job.label, f"{name}: a reference row needs a label"


def test_reference_rows_are_well_formed() -> None:
    for path in REFERENCE.glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["paper"] and doc["retrieved"]
        for key, table in doc["tables"].items():
            assert table["table"] and "page" in table, (path.name, key)
            for row in table["rows"]:
                assert set(row) == {"method", "remaining", "task", "metric", "value"}
                assert 0 <= row["value"] <= 100


def _representatives(path: pathlib.Path) -> list[str]:
    """One variant per (task family, method, objective) of a config."""
    chosen: dict[tuple, str] = {}
    for name, job in load_module(path).VARIANTS.items():
        key = (recipes.family(job.task), job.method, job.options.get("objective"))
        chosen.setdefault(key, name)
    return sorted(chosen.values())


def _first_per_family() -> list[tuple[pathlib.Path, str]]:
    """Each config's first variant per task family, less those that run the same program
    as one already chosen (same family, method, objective, model and packing: e.g. the demo
    and small_repro's dense SST-2 runs)."""
    chosen, seen = [], set()
    for path in CONFIGS:
        variants = load_module(path).VARIANTS
        firsts = {recipes.family(j.task): n for n, j in reversed(variants.items())}
        for name in sorted(firsts.values()):
            job = variants[name]
            key = (recipes.family(job.task), job.method, job.options.get("objective"))
            key += (job.model, job.pack)
            if key not in seen:
                seen.add(key)
                chosen.append((path, name))
    return chosen


FIRST_PER_FAMILY = _first_per_family()


@pytest.mark.parametrize("path,variant", FIRST_PER_FAMILY, ids=lambda x: getattr(x, "stem", x))
def test_one_step_dry_run(path, variant, world, tmp_path) -> None:
    job = tiny(load_module(path).VARIANTS[variant], world)
    result = recipes.run(job, tmp_path / "run")
    assert result["steps"] == 1 and (tmp_path / "run" / "export" / "config.json").exists()
    assert result["dev"][result["dev"]["primary"]] is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    "path,variant",
    [(p, v) for p in CONFIGS for v in _representatives(p)],
    ids=lambda x: getattr(x, "stem", x),
)
def test_one_step_dry_run_every_method(path, variant, world, tmp_path) -> None:
    job = tiny(load_module(path).VARIANTS[variant], world)
    assert recipes.run(job, tmp_path / "run")["steps"] == 1


def test_override_checks_types_and_names() -> None:
    job = Job()
    assert override(job, ["steps=7", "task=rte", "teacher=None"]).steps == 7
    assert override(job, ["method_options.teacher_mode=best"]).options == {"teacher_mode": "best"}
    assert override(job, ["learning_rate=1"]).learning_rate == 1.0
    with pytest.raises(ValueError, match="steps: expected int"):
        override(job, ["steps=abc"])
    with pytest.raises(ValueError, match="unknown field 'stpes'"):
        override(job, ["stpes=3"])
    with pytest.raises(ValueError, match="expects key=value"):
        override(job, ["steps"])
    with pytest.raises(ValueError, match="sparsity must be in"):
        override(job, ["sparsity=1.5"])


def test_cli_train_eval_report(world, tmp_path, capsys) -> None:
    config = ROOT / "experiments" / "configs" / "sparsebert_glue.py"
    job = tiny(load_module(config).VARIANTS["rte"], world)
    sets = [
        f"{f}={getattr(job, f)!r}"
        for f in (
            "model",
            "teacher",
            "data_dir",
            "steps",
            "batch_size",
            "max_length",
            "train_subset",
            "eval_subset",
            "eval_batch_size",
        )
    ]
    assert (
        cli.main(
            [
                "train",
                "--config",
                f"{config}:rte",
                "--workdir",
                str(tmp_path),
                *[a for s in sets for a in ("--set", s)],
            ]
        )
        == 0
    )
    run_dir = tmp_path / "sparsebert_glue" / "rte"
    result = json.loads((run_dir / "result.json").read_text())
    capsys.readouterr()
    # the exported folder scores what training reported
    assert cli.main(["eval", "--run", str(run_dir)]) == 0
    evaluated = json.loads(capsys.readouterr().out)["dev"]
    assert evaluated["accuracy"] == pytest.approx(result["dev"]["accuracy"], abs=1e-9)
    # the report finds the paper's number for SparseBERT on RTE at 5% remaining: 69.1
    assert (
        cli.main(
            ["report", str(tmp_path), "--out", str(tmp_path / "rep"), "--reference", str(REFERENCE)]
        )
        == 0
    )
    table = (tmp_path / "rep" / "table.md").read_text()
    line = next(x for x in table.splitlines() if "| rte |" in x)
    assert "SparseBERT" in line and "| 69.1 |" in line and "95.0%" in line
    assert (tmp_path / "rep" / "metric_vs_sparsity.png").stat().st_size > 1000


def test_plot_wraps_tasks_three_to_a_row(tmp_path) -> None:
    """Four tasks: two rows of three panels (not one strip), one legend beside them; a task
    pruned at a single sparsity still plots."""
    import matplotlib.image

    def row(task, method, target, ours):
        return {
            "task": task,
            "method": method,
            "target": target,
            "sparsity": target,
            "metric": "accuracy",
            "primary": True,
            "ours": ours,
            "paper": 70.0 if method == "pins" and target == 0.9 else None,
        }

    table = [row(t, "dense", 0.0, 85.0) for t in ("a", "b", "c", "d")]
    table += [
        row(t, m, s, 80 - 10 * s) for t in "abc" for m in ("pins", "taylor") for s in (0.8, 0.9)
    ]
    table.append(row("d", "pins", 0.8, 60.0))
    image = matplotlib.image.imread(report.plot(table, tmp_path / "p.png"))
    height, width = image.shape[:2]
    assert 1.5 < width / height < 3.0  # a 1x4 strip would be about 5:1
    with pytest.raises(ValueError, match="no finished runs"):
        report.plot([], tmp_path / "q.png")


def test_cli_rejects_bad_input(tmp_path) -> None:
    config = ROOT / "experiments" / "configs" / "sparsebert_glue.py"
    with pytest.raises(SystemExit, match="has no variant 'nope'"):
        cli.main(["train", "--config", f"{config}:nope"])
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["train", "--config", str(tmp_path / "missing.py")])
    with pytest.raises(SystemExit, match="has 4 variants; pick one"):
        cli.main(["train", "--config", str(config)])
    with pytest.raises(FileNotFoundError, match="no run folder"):
        report.collect([tmp_path / "none"])
