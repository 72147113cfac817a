"""Evaluation metrics with the official semantics of GLUE, SQuAD v1.1, CoNLL NER and data-to-text.

Thin wrappers over maintained libraries (scikit-learn, SciPy, seqeval, sacrebleu, rouge-score);
only the SQuAD v1.1 answer matching is written here, from the official script's documented
semantics, because no maintained package exposes it (``datasets`` no longer ships metrics).

Conventions:

* Inputs are NumPy arrays (or anything ``np.asarray`` accepts, e.g. JAX arrays and lists) for
  GLUE, and Python strings / lists of strings for SQuAD, NER and generation.
* Every score is a plain Python ``float`` on the **0-1 scale**: accuracy, F1, exact match,
  BLEU, chrF and ROUGE-L lie in [0, 1]; MCC, Pearson and Spearman in [-1, 1]; TER in [0, inf)
  (an edit rate, lower is better, and above 1 when the output needs more edits than the
  reference has words). Papers and the official scripts print 100 times these values; format
  to percent in reports, not here.
* Each metric function returns a dict ``{metric_name: float, ..., "primary": metric_name}``:
  the names are those the papers / official scripts use, and ``result[result["primary"]]``
  is the value used for model selection.
* For exact evaluation across hosts, sum the sufficient statistics from :func:`confusion`
  (classification) or :func:`regression_sums` (STS-B Pearson) over hosts and finish with
  :func:`from_confusion` / :func:`pearson_from_sums`. Spearman needs the full arrays (ranks are
  not additive): gather predictions for STS-B.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.stats
import seqeval.metrics
import sklearn.metrics
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF, TER

Scores = dict[str, float | str]
"""Metric name -> value (float), plus ``"primary"`` -> the name of the model-selection metric."""

PRIMARY = "primary"


# --------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """The official metric set of one GLUE task.

    Attributes:
      metrics: metric names reported for the task, in the order GLUE / Hugging Face report them.
      primary: the metric used for model selection.
      num_classes: number of label ids, or ``None`` for the regression task (STS-B).
    """

    metrics: tuple[str, ...]
    primary: str
    num_classes: int | None


GLUE_TASKS: Mapping[str, GlueTask] = MappingProxyType(
    {
        "cola": GlueTask(("mcc",), "mcc", 2),
        "sst2": GlueTask(("accuracy",), "accuracy", 2),
        "mrpc": GlueTask(("accuracy", "f1"), "accuracy", 2),
        "qqp": GlueTask(("accuracy", "f1"), "accuracy", 2),
        "stsb": GlueTask(("pearson", "spearmanr"), "pearson", None),
        "mnli": GlueTask(("accuracy",), "accuracy", 3),
        "mnli_matched": GlueTask(("accuracy",), "accuracy", 3),
        "mnli_mismatched": GlueTask(("accuracy",), "accuracy", 3),
        "qnli": GlueTask(("accuracy",), "accuracy", 2),
        "rte": GlueTask(("accuracy",), "accuracy", 2),
        "wnli": GlueTask(("accuracy",), "accuracy", 2),
        "ax": GlueTask(("mcc",), "mcc", 3),
    }
)
"""Task name (Hugging Face ``glue`` config names) -> its official metrics.

MRPC / QQP F1 is binary F1 of the positive class (label 1, "paraphrase" / "duplicate").
"""

_GLUE_ALIASES = {
    "sst_2": "sst2",
    "sts_b": "stsb",
    "mnli_m": "mnli_matched",
    "mnli_mm": "mnli_mismatched",
}


def glue_task(task: str) -> GlueTask:
    """Looks up a GLUE task case-insensitively; ``-`` and ``_`` are interchangeable.

    Raises:
      ValueError: for an unknown task, listing the known names.
    """
    name = task.lower().replace("-", "_")
    name = _GLUE_ALIASES.get(name, name)
    if name not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known tasks: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[name]


def glue(task: str, predictions: npt.ArrayLike, labels: npt.ArrayLike) -> Scores:
    """The official GLUE metrics of ``task``.

    CoLA / AX: Matthews correlation (``mcc``); SST-2 / MNLI / QNLI / RTE / WNLI: ``accuracy``;
    MRPC / QQP: ``accuracy`` and binary ``f1`` (positive class 1); STS-B: ``pearson`` and
    ``spearmanr`` (ties get average ranks, as in SciPy).

    Degenerate cases follow scikit-learn / SciPy, with one choice made explicit: F1 with no
    predicted and no true positives is 0.0 (``zero_division=0.0``). MCC is 0.0 when labels or
    predictions hold a single class (scikit-learn's convention; its single-label warning is
    silenced). Pearson / Spearman of a constant array are undefined: NaN, with SciPy's
    ``ConstantInputWarning``.

    Args:
      task: a name in :data:`GLUE_TASKS` (case-insensitive; aliases like ``"SST-2"``,
        ``"mnli-mm"`` accepted).
      predictions: ``[n]`` predicted class ids (integers; the argmax of the logits), or
        ``[n]`` real-valued scores for STS-B.
      labels: ``[n]`` gold class ids in ``[0, num_classes)``, or gold scores for STS-B.

    Returns:
      ``{metric: float, ..., "primary": metric}``.

    Raises:
      ValueError: unknown task, inputs not 1-D, of different lengths, empty, class ids out of
        range, or (STS-B) fewer than two or non-finite values.
      TypeError: non-integer class ids for a classification task.
    """
    spec = glue_task(task)
    if spec.num_classes is None:
        x, y = _real_pair(predictions, labels)
        return _regression_scores(spec, x, y)
    p, t = _class_pair(predictions, labels, spec.num_classes)
    return _classification_scores(spec, p, t)


def _accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(sklearn.metrics.accuracy_score(labels, predictions))


def _binary_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(
        sklearn.metrics.f1_score(
            labels, predictions, pos_label=1, average="binary", zero_division=0.0
        )
    )


def _mcc(labels: np.ndarray, predictions: np.ndarray) -> float:
    with warnings.catch_warnings():
        # One class everywhere is a legitimate input (MCC = 0.0); the warning is noise.
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        return float(sklearn.metrics.matthews_corrcoef(labels, predictions))


_CLASSIFICATION_METRICS: Mapping[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _binary_f1,
    "mcc": _mcc,
}


def _classification_scores(spec: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> Scores:
    scores: Scores = {
        name: _CLASSIFICATION_METRICS[name](labels, predictions) for name in spec.metrics
    }
    scores[PRIMARY] = spec.primary
    return scores


def _regression_scores(spec: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> Scores:
    return {
        "pearson": float(scipy.stats.pearsonr(predictions, labels).statistic),
        "spearmanr": float(scipy.stats.spearmanr(predictions, labels).statistic),
        PRIMARY: spec.primary,
    }


# --------------------------------------------------------------------------------------------
# Input validation (GLUE / sufficient statistics)
# --------------------------------------------------------------------------------------------


def _pair(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(predictions), np.asarray(labels)
    for name, a in (("predictions", p), ("labels", t)):
        if a.ndim != 1:
            raise ValueError(
                f"{name} must be 1-D (one value per example), got shape {a.shape}; "
                "for logits pass their argmax over the class axis"
            )
    if p.shape != t.shape:
        raise ValueError(f"predictions and labels differ in length: {len(p)} != {len(t)}")
    if p.size == 0:
        raise ValueError("predictions and labels are empty")
    return p, t


def _check_class_ids(name: str, a: np.ndarray, num_classes: int) -> None:
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise TypeError(
            f"{name} must be integer class ids, got dtype {a.dtype}; "
            "for logits or probabilities pass their argmax"
        )
    low, high = int(a.min()), int(a.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} must be class ids in [0, {num_classes}), got values in [{low}, {high}]"
        )


def _class_pair(
    predictions: npt.ArrayLike, labels: npt.ArrayLike, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    p, t = _pair(predictions, labels)
    _check_class_ids("predictions", p, num_classes)
    _check_class_ids("labels", t, num_classes)
    return p.astype(np.int64), t.astype(np.int64)


def _real_pair(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, t = _pair(predictions, labels)
    for name, a in (("predictions", p), ("labels", t)):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    p, t = p.astype(np.float64), t.astype(np.float64)
    if p.size < 2:
        raise ValueError("correlations need at least 2 examples")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("predictions and labels must be finite (found NaN or inf)")
    return p, t


# --------------------------------------------------------------------------------------------
# Sufficient statistics for multi-host evaluation
# --------------------------------------------------------------------------------------------


def confusion(predictions: npt.ArrayLike, labels: npt.ArrayLike, num_classes: int) -> np.ndarray:
    """Confusion counts, summable across hosts.

    Args:
      predictions: ``[n]`` predicted class ids in ``[0, num_classes)``.
      labels: ``[n]`` gold class ids in ``[0, num_classes)``.
      num_classes: ``C``.

    Returns:
      ``int64 [C, C]``; entry ``[i, j]`` counts examples with label ``i`` predicted as ``j``
      (rows are gold labels, as in ``sklearn.metrics.confusion_matrix(labels, predictions)``).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p, t = _class_pair(predictions, labels, num_classes)
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def from_confusion(task: str, matrix: npt.ArrayLike) -> Scores:
    """:func:`glue` of a classification task from (summed) :func:`confusion` counts.

    The counts are expanded back into label / prediction arrays (``O(n)`` memory) and scored
    by the same scikit-learn calls as :func:`glue`; accuracy, F1 and MCC only depend on the
    counts, so the result equals :func:`glue` on the raw arrays exactly.

    Args:
      task: a classification task of :data:`GLUE_TASKS`.
      matrix: ``[C, C]`` non-negative integer counts, rows = gold labels, ``C`` the task's
        number of classes.

    Raises:
      ValueError: STS-B (use :func:`pearson_from_sums`), wrong shape, negative or zero counts.
      TypeError: non-integer counts.
    """
    spec = glue_task(task)
    if spec.num_classes is None:
        raise ValueError(f"{task!r} is a regression task: use regression_sums / pearson_from_sums")
    m = _check_confusion(np.asarray(matrix), spec.num_classes)
    classes = np.arange(spec.num_classes)
    counts = m.ravel()
    labels = np.repeat(np.repeat(classes, spec.num_classes), counts)
    predictions = np.repeat(np.tile(classes, spec.num_classes), counts)
    return _classification_scores(spec, predictions, labels)


def _check_confusion(m: np.ndarray, num_classes: int) -> np.ndarray:
    if m.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix must have shape {(num_classes,) * 2}, got {m.shape}")
    if not np.issubdtype(m.dtype, np.integer):
        raise TypeError(f"confusion counts must be integers, got dtype {m.dtype}")
    if (m < 0).any():
        raise ValueError("confusion counts must be non-negative")
    if m.sum() == 0:
        raise ValueError("confusion matrix is empty (no examples)")
    return m.astype(np.int64)


def regression_sums(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> np.ndarray:
    """Float64 moments for Pearson, summable across hosts.

    Args:
      predictions: ``[n]`` real predictions ``x`` (cast to float64 before summing).
      labels: ``[n]`` real gold scores ``y``.

    Returns:
      ``float64 [6]``: ``(n, sum x, sum y, sum x^2, sum y^2, sum x*y)``. Sum these over
      hosts, then call :func:`pearson_from_sums`. Spearman cannot be computed from sums:
      gather the full arrays and use :func:`glue`.
    """
    p, t = _pair(predictions, labels)
    x, y = p.astype(np.float64), t.astype(np.float64)
    return np.array([x.size, x.sum(), y.sum(), x @ x, y @ y, x @ y], dtype=np.float64)


def pearson_from_sums(sums: npt.ArrayLike) -> float:
    """Pearson correlation from (summed) :func:`regression_sums`.

    Agrees with ``scipy.stats.pearsonr`` to about 1e-15 on STS-B-like data (values of order 1,
    thousands of examples); the one-pass formula loses accuracy when the mean is huge compared
    with the spread. Returns NaN when either variable is constant (relative variance below
    1e-12), like SciPy; the result is clipped to [-1, 1].

    Args:
      sums: ``[6]`` as returned by :func:`regression_sums` (possibly summed over hosts).
    """
    s = np.asarray(sums, dtype=np.float64)
    if s.shape != (6,):
        raise ValueError(f"sums must have shape (6,), got {s.shape}")
    n, sx, sy, sxx, syy, sxy = (float(v) for v in s)
    if n < 2:
        raise ValueError(f"correlations need at least 2 examples, got n={n:g}")
    var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
    if var_x <= 1e-12 * sxx or var_y <= 1e-12 * syy:
        return math.nan
    r = (sxy - sx * sy / n) / math.sqrt(var_x * var_y)
    return max(-1.0, min(1.0, r))


# --------------------------------------------------------------------------------------------
# SQuAD v1.1
# --------------------------------------------------------------------------------------------

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 answer normalisation.

    In order: lowercase; delete ASCII punctuation (``string.punctuation``; other Unicode
    punctuation is kept); replace the whole words ``a``, ``an``, ``the`` with a space;
    collapse whitespace runs to one space and strip. Regex word boundaries are Python 3's
    (Unicode-aware), as when the official script runs under Python 3.
    """
    text = text.lower().translate(_PUNCTUATION_TABLE)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def _token_f1(prediction: str, truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    true_tokens = normalize_answer(truth).split()
    same = sum((Counter(pred_tokens) & Counter(true_tokens)).values())
    if same == 0:  # v1.1: also when both are empty (v2.0 scores that case 1.0)
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_references(dataset: Any) -> dict[str, list[str]]:
    """Question id -> gold answer texts, from any of the usual SQuAD layouts.

    Accepts: the official JSON (a dict with ``"data"``, or its list of articles with
    ``"paragraphs"`` -> ``"qas"`` -> ``"answers"``); Hugging Face ``squad`` rows (dicts with
    ``"id"`` and ``"answers": {"text": [...]}``); or an existing mapping id -> texts.
    """
    if isinstance(dataset, Mapping):
        if "data" in dataset and _is_article_list(dataset["data"]):
            return _references_from_articles(dataset["data"])
        return {str(k): _answer_texts(k, v) for k, v in dataset.items()}
    rows = list(dataset)
    if _is_article_list(rows):
        return _references_from_articles(rows)
    return {str(row["id"]): _answer_texts(row["id"], row["answers"]) for row in rows}


def _is_article_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and isinstance(value[0], Mapping)
        and "paragraphs" in value[0]
    )


def _references_from_articles(articles: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    return {
        str(qa["id"]): _answer_texts(qa["id"], qa["answers"])
        for article in articles
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }


def _answer_texts(qid: Any, answers: Any) -> list[str]:
    if isinstance(answers, Mapping):  # Hugging Face: {"text": [...], "answer_start": [...]}
        answers = answers["text"]
    if isinstance(answers, str) or not isinstance(answers, Sequence):
        raise TypeError(f"answers of question {qid!r} must be a sequence of texts")
    texts = [a["text"] if isinstance(a, Mapping) else a for a in answers]
    if not texts or not all(isinstance(a, str) for a in texts):
        raise ValueError(f"question {qid!r} needs at least one gold answer text")
    return texts


def squad(predictions: Mapping[str, str], references: Any) -> Scores:
    """SQuAD v1.1 exact match and token F1 (official ``evaluate-v1.1.py`` semantics).

    Each question scores the maximum over its gold answers of exact match and of token F1
    (bag-of-tokens F1 of the :func:`normalize_answer` forms; 0 if nothing overlaps, including
    an empty prediction). Scores are averaged over *all* questions in ``references``: a
    question without a prediction scores 0 (the official script prints a message; here a
    ``UserWarning`` counts them). Predictions for unknown ids are ignored, as there.

    Args:
      predictions: question id -> predicted answer text.
      references: question id -> gold answer texts, or a SQuAD dataset in any layout
        :func:`squad_references` accepts.

    Returns:
      ``{"exact_match": float, "f1": float, "primary": "f1"}`` in [0, 1] (the official script
      prints 100 times these).
    """
    refs = squad_references(references)
    if not refs:
        raise ValueError("references hold no questions")
    for qid, prediction in predictions.items():
        if not isinstance(prediction, str):
            raise TypeError(f"prediction for {qid!r} must be a string, got {type(prediction)}")
    missing = [qid for qid in refs if qid not in predictions]
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(refs)} questions have no prediction and score 0 "
            f"(first: {missing[0]!r})",
            stacklevel=2,
        )
    em = f1 = 0.0
    for qid, truths in refs.items():
        if qid in predictions:
            em += max(_exact_match(predictions[qid], t) for t in truths)
            f1 += max(_token_f1(predictions[qid], t) for t in truths)
    return {"exact_match": em / len(refs), "f1": f1 / len(refs), PRIMARY: "f1"}


# --------------------------------------------------------------------------------------------
# Named entity recognition (CoNLL)
# --------------------------------------------------------------------------------------------


def entity_f1(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> Scores:
    """Entity-level micro precision / recall / F1 and token accuracy, via seqeval.

    seqeval's default mode reproduces the CoNLL ``conlleval`` script: an entity is a maximal
    chunk of ``B-X`` / ``I-X`` tags of one type; an ``I-X`` after ``O`` or after another
    type starts a new entity (lenient chunking), and it counts only when its span and type
    equal a gold entity. Tags are expected in IOB2 (``B-`` opens every entity; Hugging Face
    CoNLL-2003 ``ner_tags`` are IOB2), though the lenient chunking also reads IOB1. Precision
    and recall of an empty set are 0.0 (``zero_division=0``).

    Args:
      true_tags: ``[sentences][tokens]`` gold tag strings, e.g. ``"B-PER"``, ``"I-PER"``, ``"O"``.
      pred_tags: predicted tags, the same shape.

    Returns:
      ``{"precision", "recall", "f1", "accuracy": float, "primary": "f1"}``.
    """
    y_true, y_pred = _check_tag_sequences(true_tags, pred_tags)
    return {
        "precision": float(seqeval.metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(seqeval.metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(seqeval.metrics.f1_score(y_true, y_pred, zero_division=0)),
        "accuracy": float(seqeval.metrics.accuracy_score(y_true, y_pred)),
        PRIMARY: "f1",
    }


def _check_tag_sequences(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> tuple[list[list[str]], list[list[str]]]:
    y_true = [_tag_list(s, "true_tags") for s in true_tags]
    y_pred = [_tag_list(s, "pred_tags") for s in pred_tags]
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"true_tags and pred_tags differ in sentences: {len(y_true)} != {len(y_pred)}"
        )
    for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted tags")
    if sum(map(len, y_true)) == 0:
        raise ValueError("no tokens to score")
    return y_true, y_pred


def _tag_list(sentence: Sequence[str], name: str) -> list[str]:
    if isinstance(sentence, str) or not all(isinstance(tag, str) for tag in sentence):
        raise TypeError(f"{name} must be a list of sentences, each a list of tag strings")
    return list(sentence)


# --------------------------------------------------------------------------------------------
# Data-to-text generation (E2E, WebNLG, DART)
# --------------------------------------------------------------------------------------------


def generation(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, lowercase: bool = False
) -> Scores:
    """Corpus BLEU, chrF, chrF++, TER (sacrebleu) and ROUGE-L (rouge-score).

    * ``bleu``: sacrebleu ``corpus_bleu`` (mteval-v13a tokenisation, ``exp`` smoothing,
      closest reference length with ties to the shorter), mteval-v13a's algorithm. With
      ``lowercase=True`` it is the E2E challenge's official BLEU (mteval-v13a, which lowercases
      by default); the two differ only on degenerate corpora with no n-gram of some order.
    * ``chrf`` / ``chrf++``: sacrebleu chrF (character 6-grams, beta 2) and chrF++ (plus word
      bigrams; reported by WebNLG 2020), case-sensitive.
    * ``ter``: sacrebleu TER, a reimplementation of tercom with tercom's defaults
      (case-insensitive); WebNLG and DART report it. Lower is better.
    * ``rouge_l``: rouge-score ROUGE-L F-measure (its tokeniser: lowercase, ``[a-z0-9]+``
      tokens, no stemming), max over an example's references, averaged over examples. This
      is a per-example average, not the E2E script's ROUGE-L, which is the coco-caption one
      (PTB tokenisation, F-beta with beta 1.2 from precision and recall each maximised over
      references separately).

    Examples may have different numbers of references (E2E, WebNLG, DART do). sacrebleu
    takes references as streams (stream ``k`` holds every example's ``k``-th reference); the
    shorter lists are padded with ``None``, which sacrebleu skips. Padding with ``""``
    instead would add zero-length references that change the closest reference length
    (BLEU's brevity penalty) and TER's average reference length; scripts that pad reference
    files with empty lines for ``multi-bleu.perl`` have that quirk. The E2E script's mteval
    also skips missing references.

    Not computed: METEOR (the official METEOR 1.5 is a Java jar; NLTK's reimplementation
    differs from it and needs WordNet data that cannot be downloaded here); NIST (NLTK's
    ``corpus_nist`` picks one reference per segment, whereas mteval, used by E2E, clips
    n-gram counts against all references and uses the average reference length, so the two
    differ with multiple references); CIDEr (only in pycocoevalcap, not a dependency);
    BERTScore, BLEURT, MoverScore (model-based).

    Args:
      hypotheses: ``[n]`` system outputs (detokenised text; empty strings allowed).
      references: ``[n][k_i]`` reference texts, ``k_i >= 1`` non-empty references per example.
      lowercase: lowercase before BLEU (E2E's official BLEU is case-insensitive).

    Returns:
      ``{"bleu", "chrf", "chrf++", "ter", "rouge_l": float, "primary": "bleu"}``, all on the
      0-1 scale (sacrebleu's 0-100 scores divided by 100).
    """
    hyps, refs = _check_generation_inputs(hypotheses, references)
    streams = _reference_streams(refs)
    return {
        "bleu": _corpus_score(BLEU(lowercase=lowercase), hyps, streams),
        "chrf": _corpus_score(CHRF(), hyps, streams),
        "chrf++": _corpus_score(CHRF(word_order=2), hyps, streams),
        "ter": _corpus_score(TER(), hyps, streams),
        "rouge_l": _rouge_l(hyps, refs),
        PRIMARY: "bleu",
    }


def _check_generation_inputs(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    if isinstance(hypotheses, str) or not all(isinstance(h, str) for h in hypotheses):
        raise TypeError("hypotheses must be a sequence of strings")
    hyps, refs = list(hypotheses), [_reference_list(i, r) for i, r in enumerate(references)]
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    if not hyps:
        raise ValueError("hypotheses and references are empty")
    return hyps, refs


def _reference_list(index: int, refs: Sequence[str]) -> list[str]:
    if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
        raise TypeError(f"references[{index}] must be a list of strings")
    if not refs:
        raise ValueError(f"example {index} has no reference")
    if any(not r.strip() for r in refs):
        raise ValueError(
            f"example {index} has an empty reference; drop missing references, do not pad"
        )
    return list(refs)


def _reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    width = max(map(len, references))
    return [[r[k] if k < len(r) else None for r in references] for k in range(width)]


def _corpus_score(
    metric: BLEU | CHRF | TER, hypotheses: list[str], streams: list[list[str | None]]
) -> float:
    """``metric``'s corpus score on the 0-1 scale (sacrebleu's 0-100 divided by 100)."""
    # sacrebleu skips None references (as its docstring says) but annotates them as str
    return metric.corpus_score(hypotheses, streams).score / 100  # type: ignore[arg-type]


def _rouge_l(hypotheses: list[str], references: list[list[str]]) -> float:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    per_example = [
        scorer.score_multi(refs, hyp)["rougeL"].fmeasure
        for hyp, refs in zip(hypotheses, references, strict=True)
    ]
    return math.fsum(per_example) / len(per_example)


__all__ = [
    "GLUE_TASKS",
    "PRIMARY",
    "GlueTask",
    "Scores",
    "confusion",
    "entity_f1",
    "from_confusion",
    "generation",
    "glue",
    "glue_task",
    "normalize_answer",
    "pearson_from_sums",
    "regression_sums",
    "squad",
    "squad_references",
]
