"""jaxprune.metrics equals scikit-learn / SciPy / seqeval / sacrebleu / the SQuAD v1.1 semantics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sacrebleu
import scipy.stats
import seqeval.metrics
import sklearn.metrics
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from rouge_score import rouge_scorer

from jaxprune import metrics

# ----------------------------------------------------------------------------------- GLUE


@pytest.mark.parametrize(
    ("task", "num_classes"),
    [("cola", 2), ("sst2", 2), ("mrpc", 2), ("qqp", 2), ("mnli", 3), ("rte", 2), ("ax", 3)],
)
def test_glue_classification_equals_sklearn(task: str, num_classes: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, num_classes, 200))
    expected = {
        "accuracy": sklearn.metrics.accuracy_score(labels, predictions),
        "f1": sklearn.metrics.f1_score(labels, predictions) if num_classes == 2 else None,
        "mcc": sklearn.metrics.matthews_corrcoef(labels, predictions),
    }
    result = metrics.glue(task, predictions, labels)
    spec = metrics.glue_task(task)
    assert set(result) == {*spec.metrics, "primary"}
    assert result["primary"] == spec.primary
    for name in spec.metrics:
        assert type(result[name]) is float
        assert result[name] == expected[name]


def test_mrpc_hand_computed() -> None:
    labels = np.array([1, 1, 0, 0, 1])
    predictions = np.array([1, 0, 0, 1, 1])  # tp 2, fn 1, tn 1, fp 1
    assert metrics.glue("mrpc", predictions, labels) == {
        "accuracy": pytest.approx(3 / 5),
        "f1": pytest.approx(2 / 3),
        "primary": "accuracy",
    }
    # MCC = (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 1 / sqrt(3 * 3 * 2 * 2)
    assert metrics.glue("cola", predictions, labels)["mcc"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("cls", [0, 1])
def test_mcc_single_class_is_zero_without_warning(cls: int) -> None:
    labels = predictions = np.full(8, cls)
    with pytest.warns(UserWarning, match="single label"):  # sklearn's own call warns
        assert sklearn.metrics.matthews_corrcoef(labels, predictions) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.glue("cola", predictions, labels) == {"mcc": 0.0, "primary": "mcc"}


def test_mcc_constant_predictions_is_zero() -> None:
    assert metrics.glue("cola", np.ones(4, int), np.array([0, 1, 1, 0]))["mcc"] == 0.0


def test_f1_without_positive_predictions_is_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.glue("mrpc", np.zeros(3, int), np.array([0, 1, 1]))["f1"] == 0.0
        assert metrics.glue("qqp", np.zeros(3, int), np.zeros(3, int)) == {
            "accuracy": 1.0,
            "f1": 0.0,
            "primary": "accuracy",
        }


def test_stsb_equals_scipy() -> None:
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 300)
    predictions = (labels + rng.normal(0, 1, 300)).astype(np.float32)
    result = metrics.glue("stsb", predictions, labels)
    x = predictions.astype(np.float64)
    assert result == {
        "pearson": float(scipy.stats.pearsonr(x, labels).statistic),
        "spearmanr": float(scipy.stats.spearmanr(x, labels).statistic),
        "primary": "pearson",
    }


def test_spearman_ties_use_average_ranks() -> None:
    # ranks of x: 1, 2.5, 2.5, 4; of y: 1, 3, 2, 4 -> Pearson of ranks = 4.5 / sqrt(4.5 * 5)
    result = metrics.glue("stsb", [1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0])
    assert result["spearmanr"] == pytest.approx(3 / math.sqrt(10), rel=1e-12)


def test_stsb_constant_predictions_is_nan() -> None:
    with pytest.warns(scipy.stats.ConstantInputWarning):
        result = metrics.glue("stsb", np.full(5, 2.5), np.arange(5.0))
    assert math.isnan(result["pearson"])


@pytest.mark.parametrize(
    ("alias", "name"), [("SST-2", "sst2"), ("STS-B", "stsb"), ("mnli-mm", "mnli_mismatched")]
)
def test_glue_task_aliases(alias: str, name: str) -> None:
    assert metrics.glue_task(alias) is metrics.GLUE_TASKS[name]


def test_glue_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown GLUE task 'squad'.*cola, sst2"):
        metrics.glue("squad", [0], [0])
    with pytest.raises(ValueError, match="differ in length: 2 != 3"):
        metrics.glue("rte", [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        metrics.glue("rte", [], [])
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\)"):
        metrics.glue("mnli", [0, 1], [0, 3])
    with pytest.raises(ValueError, match=r"predictions must be class ids in \[0, 2\)"):
        metrics.glue("sst2", [-1, 1], [0, 1])
    with pytest.raises(TypeError, match="integer class ids"):
        metrics.glue("sst2", [0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"1-D.*argmax"):
        metrics.glue("sst2", np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="finite"):
        metrics.glue("stsb", [0.0, np.nan], [0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.glue("stsb", [0.0], [0.0])


# ------------------------------------------------------------------ sufficient statistics


def test_confusion_equals_sklearn() -> None:
    rng = np.random.default_rng(2)
    labels, predictions = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    matrix = metrics.confusion(predictions, labels, 3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(
        matrix, sklearn.metrics.confusion_matrix(labels, predictions, labels=[0, 1, 2])
    )


@pytest.mark.parametrize(("task", "num_classes"), [("cola", 2), ("mrpc", 2), ("mnli", 3)])
def test_from_confusion_summed_over_hosts_equals_glue_exactly(task: str, num_classes: int) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, num_classes, 1001)
    predictions = np.where(rng.random(1001) < 0.6, labels, rng.integers(0, num_classes, 1001))
    shards = np.array_split(np.arange(1001), 4)
    total = sum(metrics.confusion(predictions[s], labels[s], num_classes) for s in shards)
    assert metrics.from_confusion(task, total) == metrics.glue(task, predictions, labels)


def test_from_confusion_single_class() -> None:
    assert metrics.from_confusion("cola", np.array([[0, 0], [0, 7]])) == {
        "mcc": 0.0,
        "primary": "mcc",
    }


def test_from_confusion_errors() -> None:
    with pytest.raises(ValueError, match="regression"):
        metrics.from_confusion("stsb", np.eye(2, dtype=int))
    with pytest.raises(ValueError, match="shape"):
        metrics.from_confusion("mnli", np.eye(2, dtype=int))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.from_confusion("rte", np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match="empty"):
        metrics.from_confusion("rte", np.zeros((2, 2), int))
    with pytest.raises(TypeError, match="integers"):
        metrics.from_confusion("rte", np.eye(2))


def test_pearson_from_sums_equals_scipy() -> None:
    rng = np.random.default_rng(4)
    labels = rng.uniform(0, 5, 1500)
    predictions = (0.8 * labels + rng.normal(0, 1, 1500)).astype(np.float32)
    sums = sum(
        metrics.regression_sums(predictions[s], labels[s])
        for s in np.array_split(np.arange(1500), 8)
    )
    expected = scipy.stats.pearsonr(predictions.astype(np.float64), labels).statistic
    assert metrics.pearson_from_sums(sums) == pytest.approx(expected, abs=1e-6)


def test_pearson_from_sums_constant_is_nan() -> None:
    assert math.isnan(metrics.pearson_from_sums(metrics.regression_sums(np.full(9, 0.1), range(9))))


# ---------------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Denver Broncos", "denver broncos"),
        ("  a   cat\tand\nan  owl ", "cat and owl"),
        ("Theater, anthem, thesis.", "theater anthem thesis"),  # articles only as words
        ("U.S.A.", "usa"),
        ("Levi's Stadium!", "levis stadium"),
        ("the-a", "thea"),  # punctuation is deleted, not spaced, before articles go
        ("\u201cquoted\u201d", "\u201cquoted\u201d"),  # only ASCII punctuation is removed
        ("", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert metrics.normalize_answer(text) == normalized


SQUAD_REFERENCES = {
    "q1": ["Denver Broncos", "The Denver Broncos"],
    "q2": ["Carolina Panthers"],
    "q3": ["Santa Clara, California", "Levi's Stadium"],
    "q4": ["Beyoncé"],
    "q5": ["1990s"],
}
SQUAD_PREDICTIONS = {
    "q1": "the denver broncos.",  # EM 1, F1 1
    "q2": "Panthers",  # P 1, R 1/2: F1 2/3
    "q3": "Levi's Stadium in Santa Clara",  # F1 max(1/2, 4/7)
    "q4": "",  # empty prediction: 0, 0
    # q5 missing: 0, 0
    "unknown": "ignored",
}
SQUAD_EXPECTED = {
    "exact_match": pytest.approx(1 / 5),
    "f1": pytest.approx((1 + 2 / 3 + 4 / 7) / 5),
    "primary": "f1",
}


def test_squad_hand_computed() -> None:
    with pytest.warns(UserWarning, match="1 of 5 questions have no prediction"):
        assert metrics.squad(SQUAD_PREDICTIONS, SQUAD_REFERENCES) == SQUAD_EXPECTED


def test_squad_dataset_layouts() -> None:
    official = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "...",
                        "qas": [
                            {
                                "id": qid,
                                "answers": [{"text": a, "answer_start": 0} for a in answers],
                            }
                            for qid, answers in SQUAD_REFERENCES.items()
                        ],
                    }
                ],
            }
        ],
    }
    hf_rows = [
        {"id": qid, "answers": {"text": answers, "answer_start": [0] * len(answers)}}
        for qid, answers in SQUAD_REFERENCES.items()
    ]
    for layout in (official, official["data"], hf_rows):
        assert metrics.squad_references(layout) == SQUAD_REFERENCES
        with pytest.warns(UserWarning):
            assert metrics.squad(SQUAD_PREDICTIONS, layout) == SQUAD_EXPECTED


def test_squad_empty_prediction_of_article_only_answer() -> None:
    # v1.1: both normalise to "", so exact match 1, but F1 0 (no common token).
    assert metrics.squad({"q": ""}, {"q": ["The"]}) == {
        "exact_match": 1.0,
        "f1": 0.0,
        "primary": "f1",
    }


def test_squad_repeated_tokens_are_counted_as_a_bag() -> None:
    # common tokens: min(2, 1) = 1 "y" -> precision 1/3, recall 1/2
    result = metrics.squad({"q": "x y y"}, {"q": ["y z"]})
    precision, recall = 1 / 3, 1 / 2
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_squad_errors() -> None:
    with pytest.raises(ValueError, match="no questions"):
        metrics.squad({}, {})
    with pytest.raises(TypeError, match="must be a string"):
        metrics.squad({"q": None}, {"q": ["a"]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one gold answer"):
        metrics.squad({"q": "a"}, {"q": []})


# ------------------------------------------------------------------------------------ NER


def test_entity_f1_hand_computed_with_mismatched_prefixes() -> None:
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-LOC", "O", "I-LOC"], ["B-ORG", "O"]]
    # gold: PER(0-1), LOC(3), ORG; predicted: PER(0), LOC(1), LOC(3) (I- after O opens one), ORG
    precision, recall = 2 / 4, 2 / 3
    result = metrics.entity_f1(true, pred)
    assert result == {
        "precision": pytest.approx(precision),
        "recall": pytest.approx(recall),
        "f1": pytest.approx(2 * precision * recall / (precision + recall)),
        "accuracy": pytest.approx(4 / 6),
        "primary": "f1",
    }
    assert result["f1"] == seqeval.metrics.f1_score(true, pred)
    assert result["precision"] == seqeval.metrics.precision_score(true, pred)
    assert result["recall"] == seqeval.metrics.recall_score(true, pred)
    assert result["accuracy"] == seqeval.metrics.accuracy_score(true, pred)


def test_entity_f1_no_predicted_entities_is_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.entity_f1([["B-PER", "O"]], [["O", "O"]])
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    assert result["accuracy"] == 0.5


def test_entity_f1_errors() -> None:
    with pytest.raises(ValueError, match="sentences: 2 != 1"):
        metrics.entity_f1([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1"):
        metrics.entity_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="no tokens"):
        metrics.entity_f1([], [])
    with pytest.raises(TypeError, match="list of tag strings"):
        metrics.entity_f1(["B-PER"], ["B-PER"])


# ----------------------------------------------------------------------------- generation

HYPS = ["The cat sat on the mat.", "A dog runs in the park today.", "It is raining"]
REFS = [
    ["The cat sat on a mat.", "There is a cat on the mat."],
    ["A dog runs in a park."],
    ["It rains.", "It is raining hard.", "Rain is falling today."],
]


def test_generation_single_reference_equals_libraries() -> None:
    refs = [r[:1] for r in REFS]
    stream = [[r[0] for r in refs]]
    result = metrics.generation(HYPS, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(r[0], h)["rougeL"].fmeasure for h, r in zip(HYPS, refs, strict=True)]
    assert result == {
        "bleu": pytest.approx(sacrebleu.corpus_bleu(HYPS, stream).score / 100, rel=1e-12),
        "chrf": pytest.approx(sacrebleu.corpus_chrf(HYPS, stream).score / 100, rel=1e-12),
        "chrf++": pytest.approx(
            sacrebleu.corpus_chrf(HYPS, stream, word_order=2).score / 100, rel=1e-12
        ),
        "ter": pytest.approx(sacrebleu.corpus_ter(HYPS, stream).score / 100, rel=1e-12),
        "rouge_l": pytest.approx(sum(rouge) / 3, rel=1e-12),
        "primary": "bleu",
    }


VAR_HYPS = ["the cat sat on the mat", "the dog ran home"]
VAR_REFS = [
    ["the cat sat on the mat", "a cat was sitting on the mat"],
    ["the dog ran all the way back to its home"],  # one reference only
]


def test_bleu_variable_reference_counts_hand_computed() -> None:
    # matches: 1-grams 6+4 / 10, 2-grams 5+2 / 8, 3-grams 4+1 / 6, 4-grams 3+0 / 4;
    # closest reference lengths 6 + 10 = 16 > hypothesis length 10: BP = exp(1 - 16/10).
    expected = math.exp(1 - 16 / 10) * (1 * 7 / 8 * 5 / 6 * 3 / 4) ** (1 / 4)
    bleu = metrics.generation(VAR_HYPS, VAR_REFS)["bleu"]
    assert bleu == pytest.approx(expected, rel=1e-12)
    nltk = nltk_corpus_bleu(
        [[r.split() for r in refs] for refs in VAR_REFS], [h.split() for h in VAR_HYPS]
    )
    assert bleu == pytest.approx(nltk, rel=1e-12)
    # Padding the missing reference with "" would add a 0-length reference closer to the
    # 4-word hypothesis than the 10-word one, and drop the brevity penalty.
    padded = [[r[0] for r in VAR_REFS], [VAR_REFS[0][1], ""]]
    assert sacrebleu.corpus_bleu(VAR_HYPS, padded).score / 100 == pytest.approx(
        expected / math.exp(-0.6)
    )


def test_ter_variable_reference_counts_equals_sentence_statistics() -> None:
    # Corpus TER = total edits / total of each example's average reference length.
    sentence = [sacrebleu.sentence_ter(h, r) for h, r in zip(HYPS, REFS, strict=True)]
    expected = sum(s.num_edits for s in sentence) / sum(s.ref_length for s in sentence)
    assert metrics.generation(HYPS, REFS)["ter"] == pytest.approx(expected, rel=1e-12)


def test_rouge_l_is_max_over_references_averaged() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    best = [
        max(scorer.score(r, h)["rougeL"].fmeasure for r in refs)
        for h, refs in zip(HYPS, REFS, strict=True)
    ]
    assert metrics.generation(HYPS, REFS)["rouge_l"] == pytest.approx(sum(best) / 3, rel=1e-12)


def test_bleu_lowercase() -> None:
    hyps, refs = ["THE CAT SAT ON THE MAT"], [["the cat sat on the mat"]]
    assert metrics.generation(hyps, refs)["bleu"] < 0.01
    assert metrics.generation(hyps, refs, lowercase=True)["bleu"] == pytest.approx(1.0)


def test_generation_empty_hypothesis() -> None:
    result = metrics.generation(["", ""], [["a b c d"], ["e f g h"]])
    assert result["bleu"] == 0.0
    assert result["rouge_l"] == 0.0
    assert result["ter"] == pytest.approx(1.0)  # 4 insertions per 4-word reference


def test_generation_errors() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        metrics.generation(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="empty"):
        metrics.generation([], [])
    with pytest.raises(ValueError, match="example 1 has no reference"):
        metrics.generation(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="example 0 has an empty reference"):
        metrics.generation(["a"], [["a", ""]])
    with pytest.raises(TypeError, match="references\\[0\\]"):
        metrics.generation(["a"], ["a"])
