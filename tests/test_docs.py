"""The documentation's code runs and its API reference is complete.

- Every code cell (```` ```{code-cell} ````, which the documentation build also runs and shows
  with its output) and ```` ```python ```` block of a page in ``docs/`` runs, top to bottom, in
  one namespace per page (later blocks use what earlier ones defined), in a temporary working
  directory; a ```` ```pycon ```` block (``>>>`` prompts) is checked as a doctest in the same
  namespace. The figures of ``{plot}`` blocks are drawn, and so checked, by the documentation
  build.
- The examples in the package's docstrings (``>>>``, shown on the API pages) pass as doctests.
- Every name in ``logtrick.__all__`` and ``logtrick.rl.__all__`` has an entry in ``docs/api/``,
  and, once the site is built, in its ``objects.inv``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import logtrick
import logtrick.rl

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(`{3,})(python|pycon|\{code-cell\}\s+(?:ipython3|python3?))\s*$")
CELL_OPTION = re.compile(r"^:[\w-]+:")  # a code cell's ``:tags: [...]`` lines


def code_blocks(page: Path) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of each code cell, ```` ```python ```` or ```` ```pycon ````
    block; a code cell is ``python``, without its option lines."""
    blocks, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i].strip())
        if not match:
            i += 1
            continue
        fence, language, start = match.group(1), match.group(2), i + 1
        if language.startswith("{code-cell}"):
            language = "python"
            while start < len(lines) and CELL_OPTION.match(lines[start]):
                start += 1
        end = start
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}:{i + 1}: code block never closed")
        blocks.append((start, language, "\n".join(lines[start:end]) + "\n"))
        i = end + 1
    return blocks


# architecture.md sketches interfaces (signatures, dataclass layouts) in python fences: not run
SKETCHES = {"architecture.md"}


def doc_pages() -> list[Path]:
    """The hand-written Markdown pages (generated folders and sketches excluded)."""
    skip = {"_build", "auto_examples", "_static", "_templates"}
    return sorted(
        p
        for p in DOCS.rglob("*.md")
        if not skip & set(p.relative_to(DOCS).parts[:-1])
        and str(p.relative_to(DOCS)) not in SKETCHES
    )


SLOW_PAGES = {"getting_started.md", "rl_guide.md", "rl_spaces.md"}  # train agents: several seconds
PAGES_WITH_CODE = [
    pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW_PAGES else p
    for p in doc_pages()
    if code_blocks(p)
]


def run_blocks(page: Path, namespace: dict[str, object]) -> None:
    """Run every block of ``page`` in ``namespace``; a failure names the page and line."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    parser = doctest.DocTestParser()
    name = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name
    for line, language, code in code_blocks(page):
        if language == "pycon":
            test = parser.get_doctest(code, namespace, f"{name}:{line}", name, line)
            result = runner.run(test, clear_globs=False)
            assert result.failed == 0, f"{name}:{line}: doctest failed (output above)"
        else:
            exec(compile(code, f"{name}:{line}", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # runs directories and figures land in a temporary folder
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run_blocks(page, {"__name__": "__docs__"})


def test_code_blocks_are_found_and_checked(tmp_path: Path) -> None:
    """python and pycon blocks run (pycon output compared), other fences (plot, bash) do not."""
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n```{plot}\nraise SystemExit\n```\n\n"
        "```bash\nexit 1\n```\n\n````pycon\n>>> x + 1\n2\n````\n\n"
        "```{code-cell} ipython3\n:tags: [hide-input]\ny = x + 2\n```\n"
    )
    assert [(lang, code) for _, lang, code in code_blocks(page)] == [
        ("python", "x = 1\n"),
        ("pycon", ">>> x + 1\n2\n"),
        ("python", "y = x + 2\n"),
    ]
    namespace: dict[str, object] = {}
    run_blocks(page, namespace)
    assert namespace["x"] == 1 and namespace["y"] == 3
    page.write_text("```python\nx = 1\n```\n\n```pycon\n>>> x + 1\n3\n```\n")
    with pytest.raises(AssertionError, match="doctest failed"):
        run_blocks(page, {})


def _modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(logtrick.__path__, "logtrick.")]
    return [importlib.import_module(n) for n in ["logtrick", *sorted(names)]]


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module.__name__, module=module):
        result = runner.run(test)
        assert result.failed == 0, f"{test.name}: docstring example failed (output above)"


# ------------------------------------------------------------------------------- API coverage

DIRECTIVE = re.compile(
    r"^\s*\.\.\s+(auto(?:function|class|data|module|exception|attribute)|"
    r"py:(?:function|class|data|module|attribute)|currentmodule|module)::\s+([\w.]+)\s*$"
)


def entries(page_text: str) -> set[str]:
    """Full names that the autodoc and ``py:`` directives of one reST page document.

    autodoc directives name the object in full; ``py:`` directives are relative to the current
    module (set by ``currentmodule``, ``module`` and ``automodule``), as Sphinx reads them.
    """
    found, current = set(), ""
    for line in page_text.splitlines():
        match = DIRECTIVE.match(line)
        if not match:
            continue
        kind, name = match.groups()
        if kind in ("currentmodule", "module", "automodule", "py:module"):
            current = name
        if kind.startswith("auto") or kind == "py:module" or not current:
            found.add(name)
        elif kind.startswith("py:"):
            found.add(f"{current}.{name}")
    return found


def public_names() -> list[str]:
    """Every public name, as users write it: ``logtrick.X`` and ``logtrick.rl.X``."""
    return [f"logtrick.{n}" for n in logtrick.__all__] + [
        f"logtrick.rl.{n}" for n in logtrick.rl.__all__
    ]


def documented_names(api: Path = DOCS / "api") -> set[str]:
    """The names that an autodoc or ``py:`` directive of ``docs/api/*.rst`` documents."""
    return {name for page in api.glob("*.rst") for name in entries(page.read_text())}


def test_every_public_name_has_an_api_entry() -> None:
    missing = sorted(set(public_names()) - documented_names())
    assert not missing, (
        f"public names without an entry in docs/api/*.rst: {missing}; add an "
        f"'.. autofunction::' / '.. autoclass::' (or '.. py:data::') line for each"
    )


def test_a_missing_api_entry_is_reported(tmp_path: Path) -> None:
    """The check sees a name as documented only through a directive, not a mere mention."""
    (tmp_path / "a.rst").write_text(
        ".. autofunction:: logtrick.score\n\nSee logtrick.fisher.\n\n.. autosummary::\n\n"
        "   logtrick.surrogate\n\n.. currentmodule:: logtrick.rl\n\n.. py:data:: PRESETS\n\n"
        ".. autofunction:: logtrick.rl.train\n"
    )
    documented = documented_names(tmp_path)
    assert documented == {"logtrick.score", "logtrick.rl.PRESETS", "logtrick.rl.train"}


@pytest.mark.slow  # builds the site when it is not built
def test_every_public_name_is_in_the_built_site() -> None:
    """The built site's inventory (what cross-references resolve against) has every name."""
    from sphinx.util.inventory import InventoryFile

    from docs_site import built_site

    inventory = built_site() / "objects.inv"

    with inventory.open("rb") as stream:
        inv = InventoryFile.load(stream, "", lambda base, path: path)
    built = {name for entries in inv.values() for name in entries}
    missing = sorted(set(public_names()) - built)
    assert not missing, f"public names missing from the built site: {missing}"


# ----------------------------------------------------------------------------- BENCHMARKS.md


def test_benchmarks_hold_current_figures_each_with_its_command() -> None:
    """BENCHMARKS.md (the docs' benchmarks page includes it) stays short, and every section says
    how to reproduce its figures: a ``python benchmarks/...`` or ``python examples/...`` command."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    assert len(text.splitlines()) < 400, "BENCHMARKS.md: current figures only"
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert sections, "BENCHMARKS.md has no sections"
    for section in sections:
        title = section.splitlines()[0]
        assert re.search(r"python (?:benchmarks|examples)/\w+\.py", section), title
    assert "superseded" not in text.lower() and "kept for the record" not in text.lower()
    assert "{include} ../BENCHMARKS.md" in (DOCS / "benchmarks.md").read_text()
