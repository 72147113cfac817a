"""A classifying teacher's outputs are put in the dataset's label order before any loss sees
them (issue 19): by ``teacher_labels`` or the teacher's ``id2label``, else the job is refused
before anything is loaded."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from fixtures import tiny_job

from jaxprune import hf, recipes, train
from jaxprune.data.conll import NER
from jaxprune.recipes import labels
from jaxprune.recipes.job import Job, load_module, override
from jaxprune.train.loop import RunConfigError, check_resumable

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.py"))
# TextAttack's MNLI order, named: GLUE MNLI's label i is output [1, 2, 0][i].
TEXTATTACK_MNLI = ["contradiction", "entailment", "neutral"]


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if a model or a data split is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"loaded {args} before refusing the job")

    monkeypatch.setattr(hf, "load_pretrained", refuse)
    monkeypatch.setattr(recipes.common.data, "load", refuse)


def classifier(folder: pathlib.Path, id2label: list[str], head: str) -> pathlib.Path:
    """A tiny BERT classifier with MiniLM's tokenizer, random output layer (bias too), and
    ``id2label`` as its config says."""
    from flax import nnx
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(hf.resolve("minilm"))
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    model = hf.build(cfg, head=head, num_labels=len(id2label), dtype=np.float32, seed=0)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(0)
    params["classifier"]["bias"] = rng.normal(size=len(id2label)).astype(np.float32)
    params["classifier"]["kernel"] = rng.normal(size=(32, len(id2label))).astype(np.float32)
    hf.save_pretrained(model, params, folder, tokenizer=tokenizer)
    return config_json(folder, id2label)


def config_json(folder: pathlib.Path, id2label: list[str] | None, **changes) -> pathlib.Path:
    """Sets ``id2label`` (None: none) and ``changes`` in ``folder/config.json`` (made if
    absent)."""
    path = folder / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {"model_type": "bert"}
    config |= {"id2label": None if id2label is None else dict(enumerate(id2label)), **changes}
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return folder


def distilling(world, task: str, teacher: str, **changes) -> Job:
    job = tiny_job(world, task=task, method="sparsebert", teacher=teacher, steps=4, doc_stride=8)
    return dataclasses.replace(job, **changes)


def test_a_teacher_in_another_label_order_is_distilled_in_the_datasets(world, tmp_path):
    """The teacher params every loss gets (Prepared.load_teacher) give the raw teacher's
    logits indexed [1, 2, 0] by hand; the forward itself is not wrapped, so a PINS
    self-teacher that becomes the student later is not permuted."""
    folder = classifier(tmp_path / "t", TEXTATTACK_MNLI, "sequence-classification")
    job = distilling(world, "mnli", str(folder))
    assert labels.teacher_order(job) == (1, 2, 0)
    recipes.validate(job)
    prepared = recipes.prepare(job, train=False)
    model, params = prepared.load_teacher(str(folder))
    raw = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    tokens = raw.tokenizer(["a cat sat", "on the mat today"], padding=True, return_tensors="np")
    batch = {k: np.asarray(v) for k, v in tokens.items()}
    forward = train.model_fn(model)
    want = np.asarray(train.model_fn(raw.model)(raw.params, batch).logits)[..., [1, 2, 0]]
    np.testing.assert_allclose(np.asarray(forward(params, batch).logits), want, rtol=1e-6)
    np.testing.assert_allclose(  # the model's own state is reordered too
        np.asarray(model(batch["input_ids"], batch["attention_mask"]).logits), want, rtol=1e-6
    )
    unwrapped = np.asarray(forward(raw.params, batch).logits)
    np.testing.assert_allclose(unwrapped, want[..., [2, 0, 1]], rtol=1e-6)


def test_a_ner_teacher_is_mapped_by_its_tag_names(tmp_path):
    """dslim/bert-base-NER's id2label order, upper / lower case and separators aside."""
    order = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I_LOC"]
    folder = config_json(tmp_path, order, architectures=["BertForTokenClassification"])
    job = Job(task="conll2003", method="sparsebert", teacher=str(folder))
    assert labels.teacher_order(job) == (0, 3, 4, 5, 6, 7, 8, 1, 2)
    assert [order[i].replace("_", "-") for i in labels.teacher_order(job)] == list(NER)


@pytest.mark.parametrize("names", [["LABEL_0", "LABEL_1", "LABEL_2"], None, ["a", "b", "c"]])
def test_a_teacher_whose_order_is_unknown_is_refused_before_loading(world, tmp_path, names,
                                                                    no_loading):  # fmt: skip
    """TextAttack's MNLI teacher (LABEL_0..) was distilled as it came: the targets' classes
    were [contradiction, entailment, neutral] against labels [entailment, neutral, ...]."""
    folder = config_json(tmp_path, names, architectures=["BertForSequenceClassification"])
    job = distilling(world, "mnli", str(folder))
    with pytest.raises(ValueError, match=r"--set teacher_labels=0,1,2 if .* teacher_labels=1,2,0"):
        recipes.validate(job)
    recipes.validate(dataclasses.replace(job, teacher_labels=(1, 2, 0)))


def test_a_teacher_without_a_classification_head_is_refused(world, no_loading):
    job = distilling(world, "sst2", str(world["bert"]))  # a base model: its head would be new
    with pytest.raises(ValueError, match=r"names no SequenceClassification head .*BertModel"):
        recipes.validate(job)
    with pytest.raises(ValueError, match=r"random head"):  # an explicit order changes nothing
        recipes.validate(dataclasses.replace(job, teacher_labels=(0, 1)))


def test_a_hub_teacher_whose_config_is_not_cached_is_refused(world, tmp_path, monkeypatch,
                                                             no_loading):  # fmt: skip
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    job = distilling(world, "mnli", "textattack/bert-base-uncased-MNLI")
    with pytest.raises(FileNotFoundError, match=r"not in the local Hugging .*=1,2,0 \(the PINS"):
        recipes.validate(job)
    recipes.validate(dataclasses.replace(job, teacher_labels=(1, 2, 0)))  # fetched later


def test_random_init_takes_the_identity_or_the_given_order():
    job = Job(task="mnli", method="sparsebert", teacher="textattack/bert-base-uncased-MNLI",
              random_init=True)  # fmt: skip
    assert labels.teacher_order(job) == (0, 1, 2)
    job = dataclasses.replace(job, teacher_labels=(1, 2, 0))
    assert labels.teacher_order(job) == (1, 2, 0)


@pytest.mark.parametrize(
    "value, error",
    [
        ((0, 0, 1), "teacher_labels must be a permutation of 0..n-1"),
        ((1, 2, 3), "teacher_labels must be a permutation of 0..n-1"),
        ((0,), "teacher_labels must be a permutation of 0..n-1"),
        ((1, 0), r"teacher_labels=\(1, 0\) has 2 entries, but mnli has 3 labels"),
        ((0, 1, 2), r"teacher_labels=\(0, 1, 2\) contradicts .* outputs \(1, 2, 0\)"),
    ],
)
def test_a_wrong_teacher_labels_is_refused(world, tmp_path, value, error, no_loading):
    folder = config_json(tmp_path, TEXTATTACK_MNLI, architectures=["BertForSequenceClassification"])
    with pytest.raises(ValueError, match=error):
        recipes.validate(distilling(world, "mnli", str(folder), teacher_labels=value))


def test_teacher_labels_is_set_as_a_tuple_or_list_and_checked():
    job = Job(task="mnli")
    assert override(job, ["teacher_labels=1,2,0"]).teacher_labels == (1, 2, 0)
    assert override(job, ["teacher_labels=[1, 2, 0]"]).teacher_labels == (1, 2, 0)
    assert Job(teacher_labels=[1, 0]).teacher_labels == (1, 0)  # as a run's JSON has it
    with pytest.raises(ValueError, match="teacher_labels must be a permutation"):
        override(job, ["teacher_labels=1,1,0"])


@pytest.mark.parametrize("task, model", [("stsb", "bert"), ("squad", "bert"), ("e2e", "gpt2")])
def test_teacher_labels_on_a_task_without_labels_is_refused(world, task, model, no_loading):
    teacher = str(world[model])
    job = distilling(world, task, teacher, model=teacher, teacher_labels=(0, 1))
    if task != "stsb":  # decoders and SQuAD refuse sparsebert; magnitude with KD distils
        job = recipes.with_options(dataclasses.replace(job, method="magnitude"), objective="kd")
    with pytest.raises(ValueError, match=r"teacher_labels=\(0, 1\): a .* teacher outputs"):
        recipes.validate(job)
    recipes.validate(dataclasses.replace(job, teacher_labels=None))


def test_teacher_labels_without_a_teacher_is_refused(world, no_loading):
    job = tiny_job(world, teacher_labels=(0, 1))
    with pytest.raises(ValueError, match="orders a teacher's outputs, but no teacher is set"):
        recipes.validate(job)


def test_an_export_names_the_datasets_labels_so_it_can_teach(tmp_path):
    """small_repro's SparseBERT teacher and demo's PINS teacher are jaxprune exports."""
    from transformers import AutoConfig

    folder = classifier(
        tmp_path / "t", ["LABEL_0", "LABEL_1", "LABEL_2"], "sequence-classification"
    )
    job = Job(task="mnli", method="sparsebert", teacher=str(folder))
    with pytest.raises(ValueError, match="generic names"):
        labels.teacher_order(job)
    labels.name_outputs(folder, "mnli")
    assert AutoConfig.from_pretrained(folder).id2label == {
        0: "entailment",
        1: "neutral",
        2: "contradiction",
    }
    assert labels.teacher_order(job) == (0, 1, 2)


def _teacher_variants():
    for path in CONFIGS:
        for name, job in load_module(path).VARIANTS.items():
            if job.teacher is not None:
                yield f"{path.stem}:{name}", job


def test_every_config_teacher_has_its_label_order():
    """MNLI rows carry TextAttack's [1, 2, 0]; the other TextAttack rows the identity; a
    config that leaves it to id2label names a jaxprune export (which names its labels)."""
    seen = set()
    for name, job in _teacher_variants():
        names = labels.dataset_labels(job.task)
        if names is None:
            assert job.teacher_labels is None, name
        elif job.teacher.startswith("textattack/"):
            want = (1, 2, 0) if job.task == "mnli" else tuple(range(len(names)))
            assert job.teacher_labels == want, name
            seen.add(job.task)
        else:
            assert job.teacher.startswith("runs/") and job.teacher.endswith("/export"), name
    assert {"mnli", "qqp", "rte"} <= seen


def test_old_run_folders_resume_unless_their_targets_were_misordered(tmp_path):
    """A folder written before teacher_labels existed distilled the identity: it resumes a
    job whose order is the identity, and is refused for TextAttack's MNLI."""
    (tmp_path / "checkpoints" / "latest" / "3").mkdir(parents=True)

    def resume(job: Job, order) -> None:
        saved = {k: v for k, v in job.as_dict().items() if k != "teacher_labels"}
        (tmp_path / "config.json").write_text(json.dumps(saved))
        defaults = labels.resume_defaults(job, order)
        check_resumable(tmp_path, job.as_dict(), recipes.RESUMABLE_CHANGES, defaults)

    resume(Job(), None)
    rte = Job(task="rte", teacher="textattack/bert-base-uncased-RTE", teacher_labels=(0, 1))
    resume(rte, (0, 1))
    resume(dataclasses.replace(rte, teacher_labels=None), (0, 1))  # read from id2label
    mnli = Job(task="mnli", teacher="textattack/bert-base-uncased-MNLI", teacher_labels=(1, 2, 0))
    with pytest.raises(RunConfigError, match=r"teacher_labels: \[0, 1, 2\] -> \[1, 2, 0\]"):
        resume(mnli, (1, 2, 0))


def test_a_misordered_mnli_run_folder_is_refused_by_run(world, tmp_path, monkeypatch,
                                                        no_loading):  # fmt: skip
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # not cached: as given
    job = distilling(world, "mnli", "textattack/bert-base-uncased-MNLI", teacher_labels=(1, 2, 0))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "latest" / "3").mkdir(parents=True)
    saved = {k: v for k, v in job.as_dict().items() if k != "teacher_labels"}
    (run_dir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RunConfigError, match="teacher_labels"):
        recipes.run(job, run_dir)
    assert json.loads((run_dir / "config.json").read_text()) == saved


def test_eval_of_a_classifier_in_another_label_order_scores_the_datasets_labels(world, tmp_path):
    """``jaxprune eval`` of a checkpoint whose head predicts TextAttack's MNLI order: before
    the fix its outputs were scored against the dataset's ids as they came. Now the head is
    put in the dataset's order, so the score equals that of the same classifier saved in the
    dataset's order (its output columns permuted by hand)."""
    shuffled = classifier(tmp_path / "ta", TEXTATTACK_MNLI, "sequence-classification")
    raw = hf.load_pretrained(shuffled, head="sequence-classification", num_labels=3)
    params = dict(raw.params)
    params["classifier"] = {
        "kernel": np.asarray(params["classifier"]["kernel"])[:, [1, 2, 0]],
        "bias": np.asarray(params["classifier"]["bias"])[[1, 2, 0]],
    }
    ordered = tmp_path / "ordered"
    hf.save_pretrained(raw.model, params, ordered, tokenizer=raw.tokenizer)
    config_json(ordered, ["entailment", "neutral", "contradiction"])
    job = Job(
        model=str(shuffled),
        task="mnli",
        method="dense",
        max_length=32,
        eval_subset=8,
        data_dir=str(world["data"]),
    )
    assert labels.model_order(job) == (1, 2, 0)
    as_saved = recipes.evaluate(job)
    assert as_saved == recipes.evaluate(dataclasses.replace(job, model=str(ordered)))
    assert as_saved == recipes.evaluate(  # the order given explicitly agrees
        dataclasses.replace(job, model_labels=(1, 2, 0))
    )
    with pytest.raises(ValueError, match=r"model_labels=\(2, 1, 0\) contradicts"):
        recipes.evaluate(dataclasses.replace(job, model_labels=(2, 1, 0)))


@pytest.mark.parametrize("names", [["LABEL_0", "LABEL_1", "LABEL_2"], ["a", "b", "c"]])
def test_a_trained_head_whose_order_is_unknown_is_refused(world, tmp_path, names, no_loading):
    folder = config_json(tmp_path, names, architectures=["BertForSequenceClassification"])
    job = Job(model=str(folder), task="mnli", method="dense")
    with pytest.raises(ValueError, match=r"--set model_labels=0,1,2 if .* model_labels=1,2,0"):
        recipes.validate(job, train=False)
    assert labels.model_order(dataclasses.replace(job, model_labels=(0, 1, 2))) == (0, 1, 2)


def test_a_new_head_needs_no_order_and_takes_none(world, tmp_path, no_loading):
    job = tiny_job(world)  # a base checkpoint: its sst2 head is new
    assert labels.model_order(job) is None
    with pytest.raises(ValueError, match=r"model_labels=\(1, 0\): .* has no trained sst2 head"):
        labels.model_order(dataclasses.replace(job, model_labels=(1, 0)))
    two = config_json(tmp_path, ["a", "b"], architectures=["BertForSequenceClassification"])
    with pytest.raises(ValueError, match=r"not a mnli classifier"):
        labels.model_order(dataclasses.replace(job, task="mnli", model=str(two)))
