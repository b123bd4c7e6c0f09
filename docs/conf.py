"""Sphinx configuration of the logtrick documentation.

Build (warnings are errors):

    python -m sphinx -j auto -W --keep-going -b html docs docs/_build/html

``LOGTRICK_DOCS_EXAMPLES`` chooses how the gallery runs ``examples/``: ``quick`` (the default and
what CI builds: each script's ``--quick`` run, about a minute for all), ``full`` (the runs whose
figures the scripts' docstrings quote, several minutes each) or ``off`` (not executed: pages
without output, for editing prose; the guides' code cells are not run either).

What runs: the gallery (sphinx-gallery) runs ``examples/*.py`` and shows what each prints and
the figure it saves; the guides are MyST-NB pages (a ``file_format: mystnb`` header) whose
``{code-cell}`` blocks run in a Jupyter kernel, top to bottom, their output shown under them. A
cell that raises fails the build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))  # document this checkout, installed or not
sys.path.insert(0, str(DOCS / "_ext"))

import logtrick  # noqa: E402

project = "logtrick"
author = "the logtrick authors"
copyright = "the logtrick authors"
release = logtrick.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",  # [source] links where an object is documented at its own module
    "myst_nb",  # MyST Markdown, and the guides' code cells executed (it includes myst_parser)
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
    "logtrick_docs",
]

# viewcode links a module's source back to the entry of each object under the public module of
# the first entry it met: an object re-exported under two public modules (lt.X and lt.language.X
# from one source file) would get a back-link to an anchor that does not exist. Links only where
# an object is documented at the module that defines it.
viewcode_follow_imported_members = False

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_static", "_templates", "_ext", "**/*.md5", "auto_examples/*.ipynb"]
templates_path = ["_templates"]

# -- Markdown (MyST) ------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# BENCHMARKS.md (included by benchmarks.md) skips heading levels, as a README may
suppress_warnings = ["myst.header"]
# "--quick" stays two hyphens (an en dash there would break the command a reader copies);
# quotes and ellipses are still typeset
smartquotes_action = "qe"

# -- Code cells of the guides (MyST-NB) -----------------------------------------------------------
EXAMPLES = os.environ.get("LOGTRICK_DOCS_EXAMPLES", "quick")
if EXAMPLES not in ("quick", "full", "off"):
    raise ValueError(f"LOGTRICK_DOCS_EXAMPLES: expected quick, full or off, got {EXAMPLES!r}")
nb_execution_mode = "off" if EXAMPLES == "off" else "cache"  # rerun a page when its code changes
nb_execution_raise_on_error = True  # a cell that fails is a build error, not a traceback shown
nb_execution_timeout = 600
nb_execution_in_temp = True  # run directories and figures land in a temporary folder
nb_merge_streams = True

# -- API reference ---------------------------------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# -- Mathematics: MathJax 3, shipped in _static (no network at build or read time) -----------------
mathjax_path = "mathjax/tex-chtml-full.js"

# -- Theme -----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"logtrick {release}"
html_static_path = ["_static"]
html_css_files = ["logtrick.css"]
html_show_sourcelink = False

# -- Figures made by the build ---------------------------------------------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (6.4, 3.6), "figure.autolayout": True}

# -- Examples gallery ------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",  # every example is run, not only plot_*.py
    "plot_gallery": str(EXAMPLES != "off"),
    "reset_argv": "logtrick_docs.example_argv",
    "image_scrapers": ("logtrick_docs.saved_figures", "matplotlib"),
    "download_all_examples": False,
    "line_numbers": False,
    "remove_config_comments": True,
    "min_reported_time": 10**9,  # the time per example is machine noise, not documentation
    "show_memory": False,
    "show_signature": False,
    # its execution-times page loads jQuery and DataTables from a CDN: a site that needs no network
    "write_computation_times": False,
    # the examples run in two processes at once (joblib): each uses one core, and the build on a
    # two-core machine (CI's) takes half the gallery's time
    "parallel": 2,
}
