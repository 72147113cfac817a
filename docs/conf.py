"""Sphinx configuration: MyST Markdown pages, and an API reference generated from the
docstrings (autodoc + autosummary, Google-style sections through napoleon).

``make docs`` builds with ``-W``: every warning, including a cross-reference that does not
resolve (``nitpicky``), fails the build.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(".."))

from sphinx.ext import napoleon

import jaxprune

project = "jaxprune"
author = "the jaxprune authors"
copyright = "2025, the jaxprune authors"
release = jaxprune.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"jaxprune {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
pygments_style = "friendly"

# --- API reference -------------------------------------------------------------------------
autosummary_generate = True


def _shadowed_submodules() -> dict[str, list[str]]:
    """Submodules hidden behind a package attribute of the same name (``jaxprune.data.glue``
    is the function ``glue``): autosummary cannot reach them, the template documents them on
    their package's page."""
    found: dict[str, list[str]] = {}
    for info in pkgutil.walk_packages(jaxprune.__path__, "jaxprune."):
        package, _, leaf = info.name.rpartition(".")
        if leaf.startswith("_"):
            continue
        module = importlib.import_module(info.name)
        if getattr(importlib.import_module(package), leaf) is not module:
            found.setdefault(package, []).append(leaf)
    return found


autosummary_context = {"shadowed": _shadowed_submodules()}
autosummary_ignore_module_all = True  # each object on the page of the module defining it
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# Long signatures get one parameter per line.
python_maximum_signature_line_length = 88
# Google-style sections (Args:, Returns:, Attributes:) through napoleon's parser. The
# docstrings name several fields at once ("alpha_ce / alpha_kd:", "begin, end:") and put
# shapes before the colon of Returns:, so the sections become plain lists, not typed fields.
NAPOLEON = napoleon.Config(
    napoleon_numpy_docstring=False,
    napoleon_use_param=False,
    napoleon_use_rtype=False,
    napoleon_use_keyword=False,
    napoleon_custom_sections=[("Attributes", "params_style")],
)

nitpicky = True
# Types of other libraries (no intersphinx: the docs build offline), type aliases and
# the typing module's forms that autodoc writes as references.
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|jnp|np|numpy|npt|optax|chex|flax|nnx|datasets|transformers)\b.*"),
    (r"py:.*", r"(orbax|ocp|tqdm|tensorboardX|safetensors|tokenizers|matplotlib)\b.*"),
    (r"py:.*", r"(collections\.abc|typing|types|os|pathlib|argparse|logging|re)\..*"),
    (r"py:class", r"(Array|ArrayTree|PyTree|Numeric|Params|Updates|OptState|Schedule)"),
    (r"py:class", r"(GradientTransformation|GradientTransformationExtraArgs|ScalarOrSchedule)"),
    (r"py:class", r"(PathLike|Path|Module|Rngs|Dataset|Mesh|NamedSharding|PartitionSpec)"),
    (r"py:class", r"(ArrayLike|DTypeLike|Generator|Iterator|Iterable|Sequence|Mapping)"),
    (r"py:class", r"(Callable|Any|Literal|Protocol|NamedTuple|TypeAlias|Self)"),
    (r"py:class", r"(ndarray|dtype|Tokenizer|PreTrainedTokenizerBase|Figure)"),
    (r"py:class", r"jaxprune\..*\.(Prunable|MaskRule|LossFn|ModelFn|Teacher|Objective)"),
    (r"py:class", r"jaxprune\..*\.(MaskKind|Scores|Evaluate|Batch|Kind|T)"),  # T: a TypeVar
    (r"py:class", r"(Prunable|MaskRule|LossFn|ModelFn|Teacher|Objective|MaskKind)"),
]


def _reexports(app, what, name, obj, options, lines):
    """Lists, at the end of a package's docstring, the names its ``__all__`` re-exports from
    public submodules (documented there); names from private modules are documented here."""
    if what != "module" or not hasattr(obj, "__all__"):
        return
    linked, here = [], []
    for attr in obj.__all__:
        value = getattr(obj, attr)
        home = getattr(value, "__module__", None)
        if inspect.ismodule(value) or home in (None, name) or not hasattr(value, "__qualname__"):
            continue  # a module, a local name, or a constant (its class lives elsewhere)
        if not home.startswith("jaxprune"):
            continue  # a type alias of a builtin or typing construct (``dict[str, float]``)
        if any(part.startswith("_") for part in home.split(".")):
            here.append((attr, value))
        else:
            linked.append(f":obj:`{name}.{attr} <{home}.{value.__qualname__}>`")
    if linked:
        lines += ["", "**Available here:** " + ", ".join(linked) + "."]
    for attr, value in here:
        kind = "exception" if isinstance(value, type) and issubclass(value, Exception) else "class"
        kind = kind if isinstance(value, type) else "function"
        lines += ["", f".. auto{kind}:: {name}.{attr}", ""]


_ABS = re.compile(r"(?<![\\|`])\|(?=[^\s|`][^|`]*\|)")


def _plain_text_conventions(app, what, name, obj, options, lines):
    """The docstrings are written to read as plain text; two of its conventions are not
    reStructuredText, and are translated here: ``|x|`` is an absolute value (not a
    substitution), and a block indented under a paragraph is an example (a literal block,
    as if the paragraph ended with ``::``)."""
    out: list[str] = []
    para_indent, para_last = None, ""
    for i, line in enumerate(lines):
        parts = line.split("``")
        parts[::2] = [_ABS.sub(r"\\|", part) for part in parts[::2]]  # outside literals
        line = "``".join(parts)
        indent = len(line) - len(line.lstrip())
        starts_block = (
            line.strip()
            and i > 0
            and not lines[i - 1].strip()
            and para_indent is not None
            and indent >= para_indent + 4
            and not para_last.rstrip().endswith("::")
        )
        if starts_block:
            out += [" " * para_indent + "::", ""]
            para_last = "::"
        elif line.strip() and (i == 0 or not lines[i - 1].strip()):
            para_indent = indent  # first line of a paragraph
        if line.strip() and indent == para_indent:
            para_last = line
        out.append(line)
    lines[:] = out


def _google_sections(app, what, name, obj, options, lines):
    """napoleon's Google-style parser, except on constants, attributes and properties: their
    docstrings are prose (napoleon would read "text: more text" as "type: description")."""
    if what not in ("data", "attribute", "property"):
        lines[:] = napoleon.GoogleDocstring(lines, NAPOLEON, app, what, name, obj, options).lines()


def _include_undocumented(app, what, name, obj, skip, options):
    """Public functions and classes without a docstring are listed too (by signature)."""
    public = what == "module" and not name.startswith("_")
    if skip and public and (inspect.isfunction(obj) or inspect.isclass(obj)):
        return False
    return None


def _canonical(target: str) -> tuple[str | None, object]:
    """``(documented name, object)`` of what the dotted path ``target`` imports as; the name
    is None for a constant (it has no ``__module__`` of its own) and for a missing path."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None, None
        if inspect.ismodule(obj):
            return obj.__name__, obj
        home, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        return (f"{home}.{qualname}" if home and qualname else None), obj
    return None, None


def _resolve_reexports(app, env, node, contnode):
    """Resolves a reference to a re-exported name (``jaxprune.masks_of``,
    ``jaxprune.data.Batcher``, a name imported into the current module) to the object's
    documented name. Constants are matched by identity with a documented constant."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target, module = node["reftarget"], node.get("py:module")
    for candidate in ([f"{module}.{target}"] if module else []) + [target]:
        found, obj = _canonical(candidate)
        if obj is None:
            continue
        if found is None:  # a constant: the documented name that holds the same object
            leaf = "." + candidate.rpartition(".")[2]
            names = [n for n in domain.objects if n.endswith(leaf) and n != candidate]
            found = next((n for n in names if _canonical(n)[1] is obj), None)
        if found is None or found == candidate:
            continue
        for kind in (node["reftype"], "obj"):
            ref = domain.resolve_xref(env, node["refdoc"], app.builder, kind, found, node, contnode)
            if ref is not None:
                return ref
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _google_sections, priority=400)
    app.connect("autodoc-process-docstring", _plain_text_conventions, priority=450)
    app.connect("autodoc-process-docstring", _reexports)
    app.connect("autodoc-skip-member", _include_undocumented)
    app.connect("missing-reference", _resolve_reexports)
