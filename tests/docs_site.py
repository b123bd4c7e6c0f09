"""The built documentation site, for the tests that read it (``docs/_build/html``).

:func:`built_site` builds it once per test session with the README's documented command when it
is not there yet, so ``python -m pytest -q`` after the README's install checks the rendered pages
too; an existing build is used as it is (rebuild after editing the docs).
"""

from __future__ import annotations

import functools
import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILT = ROOT / "docs" / "_build" / "html"


def readme_commands() -> object:
    """``.ci/readme.py``: the commands README.md documents, as CI reads them."""
    spec = importlib.util.spec_from_file_location("ci_readme", ROOT / ".ci" / "readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sphinx_command() -> list[str]:
    """The sphinx part of the README's documentation command, run by this interpreter."""
    command = readme_commands().docs_command((ROOT / "README.md").read_text())  # type: ignore[attr-defined]
    words = shlex.split(command.split("&&")[-1])
    assert words[:3] == ["python", "-m", "sphinx"], command
    return [sys.executable, *words[1:]]


@functools.cache
def built_site() -> Path:
    """``docs/_build/html``, built now (warnings are errors) if it has no ``index.html``."""
    if not (BUILT / "index.html").is_file():
        out = subprocess.run(sphinx_command(), cwd=ROOT, capture_output=True, text=True)
        log = f"{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
        assert out.returncode == 0, f"the documentation build failed:\n{log}"
    return BUILT
