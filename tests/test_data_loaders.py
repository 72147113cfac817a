"""jaxprune.data loaders on small files written here: the real-data code path, and its errors."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import datasets
import pytest

import jaxprune.data as jd
from jaxprune.data import DataFormatError
from jaxprune.data.glue import TASKS as GLUE_TASKS


def write(root: pathlib.Path, rel: str, text: str, encoding: str = "utf-8") -> pathlib.Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# ------------------------------------------------------------------------------------ GLUE


def test_glue_tsv_quoting_off(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path,
        "glue/SST-2/train.tsv",
        'sentence\tlabel\n"quoted start , no end \t1\nplain one \t0\na "b" c\t1\n',
    )
    ds = jd.load("sst2", "train", data_dir=tmp_path)
    assert ds.column_names == ["sentence", "label", "idx"]
    assert ds["sentence"] == ['"quoted start , no end ', "plain one ", 'a "b" c']
    assert ds["label"] == [1, 0, 1] and ds["idx"] == [0, 1, 2]
    assert ds.features["label"].names == ["negative", "positive"]


def test_glue_pairs_bom_headers_and_test_split(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path,
        "glue/MRPC/train.tsv",
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA "x".\tB.\n',
    )
    write(
        tmp_path, "glue/MRPC/test.tsv", "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA\tB\n"
    )
    write(
        tmp_path,
        "glue/RTE/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tp\th\tnot_entailment\n1\tp2\th2\tentailment\n",
    )
    mrpc = jd.glue("mrpc", "train", tmp_path)
    assert mrpc[0] == {"sentence1": 'A "x".', "sentence2": "B.", "label": 1, "idx": 0}
    assert jd.glue("MRPC", "test", tmp_path)["label"] == [-1]
    rte = jd.glue("rte", "dev", tmp_path)  # dev = validation
    assert rte["label"] == [1, 0] and rte.features["label"].names == [
        "entailment",
        "not_entailment",
    ]


def test_glue_cola_headerless_stsb_float_mnli_splits(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "glue/CoLA/train.tsv", "gj04\t1\t\tGood one.\ngj04\t0\t*\tBad one.")
    assert jd.glue("cola", "train", tmp_path)["sentence"] == ["Good one.", "Bad one."]
    head = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    )
    write(tmp_path, "glue/STS-B/dev.tsv", head + "0\tg\tf\ty\t0\tn\tn\tA.\tB.\t3.800\n")
    stsb = jd.glue("sts-b", "validation", tmp_path)
    assert stsb["label"] == [pytest.approx(3.8)] and stsb.features["label"].dtype == "float32"
    mnli_head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    write(
        tmp_path,
        "glue/MNLI/dev_mismatched.tsv",
        mnli_head + "0\t1\t1\tg\tP.\tH.\tneutral\tneutral\n",
    )
    mnli = jd.glue("mnli", "validation_mismatched", tmp_path)
    assert mnli.column_names == ["premise", "hypothesis", "label", "idx"] and mnli["label"] == [1]
    with pytest.raises(ValueError, match="unknown split 'validation' for mnli"):
        jd.glue("mnli", "validation", tmp_path)


def test_glue_wrong_field_count_names_file_and_line(tmp_path, caplog) -> None:
    path = write(tmp_path, "glue/SST-2/dev.tsv", "sentence\tlabel\nok\t1\ntoo\tmany\t0\nfine\t0\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: 3 tab-separated fields, expected 2"):
        jd.glue("sst2", "validation", tmp_path)
    with caplog.at_level(logging.WARNING, logger="jaxprune.data"):
        ds = jd.glue("sst2", "validation", tmp_path, on_bad_rows="skip")
    assert ds["sentence"] == ["ok", "fine"] and ds["idx"] == [0, 2]
    assert "1 rows with the wrong number of fields skipped" in caplog.text


def test_glue_label_outside_the_set_and_missing_columns(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "glue/SST-2/train.tsv", "sentence\tlabel\nok\t1\nbad\t2\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: label '2' not in"):
        jd.glue("sst2", "train", tmp_path)
    path = write(tmp_path, "glue/RTE/train.tsv", "index\tsentence1\tlabel\n0\tp\tentailment\n")
    with pytest.raises(DataFormatError, match=rf"{path}:1: missing columns \['sentence2'\]"):
        jd.glue("rte", "train", tmp_path)
    head = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    )
    path = write(tmp_path, "glue/STS-B/train.tsv", head + "0\tg\tf\ty\t0\tn\tn\tA.\tB.\t7.5\n")
    with pytest.raises(DataFormatError, match=rf"{path}:2: score '7.5'"):
        jd.glue("stsb", "train", tmp_path)


def test_missing_file_names_the_expected_path(tmp_path: pathlib.Path) -> None:
    expected = tmp_path / "glue" / "QQP" / "dev.tsv"
    with pytest.raises(FileNotFoundError, match=str(expected)):
        jd.load("qqp", "validation", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "squad" / "train-v1.1.json")):
        jd.squad("train", tmp_path)


def test_unknown_task_and_split() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'imdb'; choose from \['cola'"):
        jd.load("imdb", "train")
    with pytest.raises(ValueError, match=r"unknown split 'dev_matched' for squad"):
        jd.load("squad", "dev_matched")


def test_env_var_selects_local_files(tmp_path, monkeypatch) -> None:
    write(tmp_path, "glue/SST-2/dev.tsv", "sentence\tlabel\nfrom env\t1\n")
    monkeypatch.setenv(jd.ENV_VAR, str(tmp_path))
    assert jd.load("sst2", "dev")["sentence"] == ["from env"]
    other = tmp_path / "other"
    write(other, "glue/SST-2/dev.tsv", "sentence\tlabel\nfrom arg\t0\n")
    assert jd.load("sst2", "dev", data_dir=other)["sentence"] == ["from arg"]  # data_dir wins


def test_no_local_folder_goes_to_the_hub(monkeypatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise OSError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.delenv(jd.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match=r"nyu-mll/glue .*JAXPRUNE_DATA_DIR"):
        jd.load("rte", "train")


# ------------------------------------------------------------------------------- SQuAD, json

SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "What is the capital?",
                            "answers": [{"answer_start": 0, "text": "Paris"}] * 2,
                        },
                        {"id": "q2", "question": "Of what?", "answers": []},
                    ],
                }
            ],
        }
    ],
}


def test_squad_json(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "squad/dev-v1.1.json", json.dumps(SQUAD))
    ds = jd.load("squad", "validation", tmp_path)
    assert ds.column_names == ["id", "title", "context", "question", "answers"]
    assert ds[0]["answers"] == {"text": ["Paris", "Paris"], "answer_start": [0, 0]}
    assert ds[1]["answers"] == {"text": [], "answer_start": []}


def test_truncated_and_incomplete_json(tmp_path: pathlib.Path) -> None:
    text = json.dumps(SQUAD, indent=1)
    path = write(tmp_path, "squad/dev-v1.1.json", text[: len(text) // 2])
    with pytest.raises(DataFormatError, match=rf"{path}:\d+: invalid JSON .*truncated"):
        jd.squad("dev", tmp_path)
    broken = json.loads(json.dumps(SQUAD))
    del broken["data"][0]["paragraphs"][0]["qas"][1]["question"]
    write(tmp_path, "squad/dev-v1.1.json", json.dumps(broken))
    with pytest.raises(DataFormatError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[1\]: missing"):
        jd.squad("dev", tmp_path)
    path = write(tmp_path, "dart/dart-v1.1.1-full-dev.json", '[{"tripleset": [["a", "b"')
    with pytest.raises(DataFormatError, match=rf"{path}:1: invalid JSON"):
        jd.dart("dev", tmp_path)


# ----------------------------------------------------------------------------------- CoNLL

IOB1 = """\
-DOCSTART- -X- -X- O

U.N. NNP I-NP I-ORG
official NN I-NP O
Ekeus NNP B-NP I-PER
heads VBZ I-VP O
for IN I-PP O
Baghdad NNP I-NP I-LOC
. . O O

-DOCSTART- -X- -X- O

Germany NNP I-NP I-LOC
's POS B-NP O
"""


def test_conll_iob1_converted_and_counted(tmp_path, caplog) -> None:
    write(tmp_path, "conll2003/train.txt", IOB1)
    with caplog.at_level(logging.INFO, logger="jaxprune.data"):
        ds = jd.load("conll2003", "train", tmp_path)
    assert ds.column_names == ["id", "tokens", "pos_tags", "chunk_tags", "ner_tags"]
    assert ds["id"] == ["0", "1"] and ds[1]["tokens"] == ["Germany", "'s"]
    names = ds.features["ner_tags"].feature.names
    assert [names[t] for t in ds[0]["ner_tags"]] == ["B-ORG", "O", "B-PER", "O", "O", "B-LOC", "O"]
    assert "4 NER tags converted from IOB1 to IOB2" in caplog.text
    assert "2 -DOCSTART- lines skipped" in caplog.text
    tags = ["B-PER", "I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]
    assert jd.iob1_to_iob2(tags) == 2
    assert tags == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]


def test_conll_malformed_lines(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "conll2003/test.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    with pytest.raises(DataFormatError, match=rf"{path}:2: 3 space-separated fields"):
        jd.conll2003("test", tmp_path)
    path = write(tmp_path, "conll2003/test.txt", "EU NNP B-NP B-ORG\n\nx NN B-NP B-XYZ\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: ner tag 'B-XYZ' not in"):
        jd.conll2003("test", tmp_path)


# ----------------------------------------------------------------------------- data-to-text

WEBNLG = """\
<benchmark>
  <entries>
    <entry category="Airport" eid="Id1" size="{size}">
      <originaltripleset><otriple>A_B | city | C</otriple></originaltripleset>
      <modifiedtripleset>
        <mtriple>A_B | cityServed | C_D</mtriple>
      </modifiedtripleset>
      <lex comment="good" lid="Id1">A B serves C D.</lex>
      <lex comment="good" lid="Id2"> C D is served by A B. </lex>
    </entry>
  </entries>
</benchmark>
"""


def test_d2t_loaders(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path,
        "e2e/devset.csv",
        'mr,ref\r\n"name[The Eagle], eatType[pub]","The Eagle, a pub."\r\n'
        '"name[The Eagle], eatType[pub]",A pub called The Eagle.\r\n',
    )
    e2e = jd.load("e2e_nlg", "validation", tmp_path)
    assert e2e.column_names == ["meaning_representation", "human_reference"]
    assert e2e[0] == {
        "meaning_representation": "name[The Eagle], eatType[pub]",
        "human_reference": "The Eagle, a pub.",
    }
    write(tmp_path, "webnlg/webnlg_challenge_2017/dev/1triples/x.xml", WEBNLG.format(size=1))
    web = jd.load("webnlg", "dev", tmp_path)
    assert web[0] == {
        "category": "Airport",
        "size": 1,
        "eid": "Id1",
        "triples": ["A_B | cityServed | C_D"],
        "lexicalizations": ["A B serves C D.", "C D is served by A B."],
    }
    assert jd.linearize("webnlg", web[0]) == "A B : cityServed : C D"
    dart = [{"tripleset": [["s", "p", "o"]], "annotations": [{"source": "x", "text": "t"}]}]
    write(tmp_path, "dart/dart-v1.1.1-full-dev.json", json.dumps(dart))
    row = jd.load("dart", "dev", tmp_path)[0]
    assert row == {
        "tripleset": [["s", "p", "o"]],
        "subtree_was_extended": None,
        "annotations": {"source": ["x"], "text": ["t"]},
    }
    assert jd.linearize("dart", row) == "s : p : o"


def test_d2t_malformed(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "e2e/trainset.csv", 'mr,ref\n"name[A]",ok\n"name[B]",x,extra\n')
    with pytest.raises(DataFormatError, match=rf"{path}:3: 3 fields, expected 2"):
        jd.e2e("train", tmp_path)
    path = write(
        tmp_path, "webnlg/webnlg_challenge_2017/train/1triples/x.xml", WEBNLG.format(size=2)
    )
    with pytest.raises(DataFormatError, match=rf"{path}:3: entry size=2 but 1 triples"):
        jd.webnlg("train", tmp_path)
    path.write_text(WEBNLG.format(size=1)[:-40])
    with pytest.raises(DataFormatError, match=rf"{path}:\d+: invalid xml"):
        jd.webnlg("train", tmp_path)
    bad = [{"tripleset": [["s", "p"]], "annotations": []}]
    path = write(tmp_path, "dart/dart-v1.1.1-full-test.json", json.dumps(bad))
    with pytest.raises(DataFormatError, match=rf"{path}: entry 0: triple \['s', 'p'\]"):
        jd.dart("test", tmp_path)


# ------------------------------------------------------- Hub path (load_dataset stubbed out)


def fake_hub(monkeypatch, rows: list[dict[str, Any]]) -> list[tuple[tuple, dict]]:
    """Replaces ``datasets.load_dataset`` by one returning ``rows``; returns its call log."""
    calls: list[tuple[tuple, dict]] = []

    def load_dataset(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(rows)

    monkeypatch.delenv(jd.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_rows_get_the_local_columns(tmp_path, monkeypatch) -> None:
    write(tmp_path, "webnlg/webnlg_challenge_2017/dev/1triples/x.xml", WEBNLG.format(size=1))
    local = jd.webnlg("validation", tmp_path)
    hub_row = {  # the Hub's web_nlg schema
        "category": "Airport",
        "size": 1,
        "eid": "Id1",
        "original_triple_sets": {"otriple_set": [["A_B | city | C"]]},
        "modified_triple_sets": {"mtriple_set": [["A_B | cityServed | C_D"]]},
        "shape": "",
        "shape_type": "",
        "lex": {
            "comment": ["good", "good"],
            "lid": ["Id1", "Id2"],
            "text": ["A B serves C D.", "C D is served by A B."],
            "lang": ["", ""],
        },
        "test_category": "",
        "dbpedia_links": [],
        "links": [],
    }
    calls = fake_hub(monkeypatch, [hub_row])
    hub = jd.webnlg("validation")
    assert hub.features == local.features and hub.to_list() == local.to_list()
    (repo,), kwargs = calls[0]
    assert repo == "webnlg-challenge/web_nlg" and kwargs["revision"] == "refs/convert/parquet"
    assert kwargs["data_files"] == {"dev": "webnlg_challenge_2017/dev/*.parquet"}


def test_hub_glue_is_conformed(monkeypatch) -> None:
    calls = fake_hub(monkeypatch, [{"idx": 0, "label": 1, "sentence": "s", "extra": 0.5}])
    ds = jd.glue("sst2", "dev")
    assert calls[0][0] == ("nyu-mll/glue",) and calls[0][1] == {
        "split": "validation",
        "name": "sst2",
    }
    assert ds.features == GLUE_TASKS["sst2"].features
    assert ds.to_list() == [{"sentence": "s", "label": 1, "idx": 0}]


def test_hub_dart_annotations_as_a_list_of_records(monkeypatch) -> None:
    row = {
        "tripleset": [["s", "p", "o"]],
        "subtree_was_extended": True,
        "annotations": [{"source": "x", "text": "t"}],
    }
    calls = fake_hub(monkeypatch, [row])
    ds = jd.dart("validation")
    assert calls[0][1]["data_files"] == {"validation": "default/validation/*.parquet"}
    assert ds.to_list() == [{**row, "annotations": {"source": ["x"], "text": ["t"]}}]
