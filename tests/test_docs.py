"""The documentation's examples run, so that the docs cannot rot.

Each page under ``docs/`` is one test. Its examples run in page order, in one namespace
per page:

- ```` ```python ```` blocks are executed;
- ```` ```pycon ```` blocks are doctests: the ``>>>`` lines run and what they print must
  match the lines below them;
- ```` ```console ```` blocks: every ``$ jaxprune ...`` line runs through
  :func:`jaxprune.cli.main` and must return 0. Any other ``$`` command fails the test:
  commands the test cannot run (``pip``, ``make``, ``gcloud``) go in ```` ```sh ```` blocks,
  which are shown and never run.

The examples are written for the real models and data. The test runs them unchanged in a
tiny world; these are the only differences, all set up by :func:`tiny_world`:

1. the working directory is a fresh temporary folder holding a copy of
   ``experiments/configs`` and ``experiments/reference``, so ``runs/`` lands there;
2. ``$JAXPRUNE_DATA_DIR`` points at a few synthetic rows of every task, in the published
   file formats (``tests/fixtures.py``);
3. :func:`jaxprune.hf.resolve` maps every model name that is not a local folder (the
   embedded ``minilm``, Hub ids such as ``bert-base-uncased``) to a 2-layer, hidden-32 BERT
   with MiniLM's tokenizer, or a 2-layer GPT-2 when the name contains ``gpt2``;
4. :func:`jaxprune.recipes.run` and :func:`jaxprune.recipes.evaluate` shrink the job:
   at most 2 optimizer steps, batches of 4 examples of at most 32 tokens, 16 training and
   8 dev examples.

Pages in ``SLOW`` (several training runs each) run with ``-m slow`` (``make test-all``);
the others stay in the default suite, under a minute together.
"""

from __future__ import annotations

import dataclasses
import doctest
import pathlib
import re
import shlex
import shutil

import pytest

from jaxprune import cli, hf, recipes

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
SLOW = {"guides/distillation.md", "guides/reproducing.md"}
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def examples(page: pathlib.Path) -> list[tuple[str, str, int]]:
    """``(language, code, line)`` of every fenced block of ``page``, in order."""
    text = page.read_text()
    return [(m[1], m[2], text.count("\n", 0, m.start()) + 2) for m in FENCE.finditer(text)]


def shrink(job: recipes.Job) -> recipes.Job:
    return dataclasses.replace(
        job,
        steps=min(job.steps or 2, 2),
        batch_size=4,
        max_length=min(job.max_length, 32),
        doc_stride=8,
        train_subset=16,
        eval_subset=8,
        eval_batch_size=8,
        max_new_tokens=4,
    )


@pytest.fixture
def tiny_world(world, tmp_path, monkeypatch) -> pathlib.Path:
    """The substitutions of the module docstring; returns the working directory."""
    for folder in ("configs", "reference"):
        shutil.copytree(ROOT / "experiments" / folder, tmp_path / "experiments" / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXPRUNE_DATA_DIR", str(world["data"]))
    real_resolve = hf.resolve

    def resolve(name_or_dir):
        if pathlib.Path(name_or_dir).expanduser().is_dir():
            return real_resolve(name_or_dir)
        return world["gpt2" if "gpt2" in str(name_or_dir).lower() else "bert"]

    monkeypatch.setattr(hf, "resolve", resolve)
    real_run, real_evaluate = recipes.run, recipes.evaluate
    monkeypatch.setattr(
        recipes, "run", lambda job, run_dir, **kw: real_run(shrink(job), run_dir, **kw)
    )
    monkeypatch.setattr(recipes, "evaluate", lambda job: real_evaluate(shrink(job)))
    return tmp_path


def run_console(code: str, where: str) -> None:
    for line in code.splitlines():
        if not line.startswith("$ "):
            continue  # output shown to the reader
        command = shlex.split(line[2:], comments=True)
        assert command[0] == "jaxprune", f"{where}: only jaxprune commands run; use ```sh"
        assert cli.main(command[1:]) == 0, f"{where}: {line}"


def run_doctest(code: str, namespace: dict, page: pathlib.Path, line: int) -> None:
    where = f"{page.name}:{line}"
    test = doctest.DocTestParser().get_doctest(code, namespace, where, str(page), line - 1)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, clear_globs=False)
    assert not runner.failures, f"{where}: {runner.failures} doctest failure(s) (output above)"


def run_page(page: pathlib.Path) -> None:
    """Runs the examples of ``page`` in order, in one namespace (tracebacks give page lines)."""
    namespace: dict = {"__name__": "__docs__"}
    for language, code, line in examples(page):
        where = f"{page.name}:{line}"
        if language == "python":
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
        elif language == "pycon":
            run_doctest(code, namespace, page, line)
        elif language == "console":
            run_console(code, where)


def page_param(page: pathlib.Path):
    name = page.relative_to(DOCS).as_posix()
    return pytest.param(page, id=name, marks=[pytest.mark.slow] if name in SLOW else [])


@pytest.mark.parametrize("page", [page_param(p) for p in PAGES])
def test_page_examples_run(page: pathlib.Path, tiny_world: pathlib.Path) -> None:
    run_page(page)


def test_every_guide_has_examples_and_slow_pages_exist() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert names >= SLOW
    for page in PAGES:
        if page.parent.name == "guides" and page.name != "index.md":
            kinds = {language for language, _, _ in examples(page)}
            assert kinds & {"python", "pycon", "console"}, f"{page.name} runs no example"


def test_a_failing_example_fails(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text("```python\nx = 1\n```\n\n```pycon\n>>> x + 1\n3\n```\n")
    with pytest.raises(AssertionError, match="doctest failure"):
        run_page(page)
    page.write_text("```console\n$ make demo\n```\n")
    with pytest.raises(AssertionError, match="only jaxprune commands run"):
        run_page(page)
