"""The commands a user reads in README.md, as ``.ci/run`` runs them (verbatim, one per line).

``python3 .ci/readme.py opening`` prints the commands of README.md's opening ```` ```bash ````
block, one per line; ``python3 .ci/readme.py docs`` prints the documentation build command (the
``sphinx`` line of the README's "Documentation" section). ``.ci/run`` runs what this prints, so
CI cannot test something other than what the README tells a user to type;
``tests/test_ci.py`` checks that ``.ci/run`` installs nothing else.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def bash_blocks(text: str) -> list[list[str]]:
    """The non-empty lines of each ```` ```bash ```` block, in order."""
    return [[ln for ln in b.splitlines() if ln.strip()] for b in BLOCK.findall(text)]


def opening_commands(text: str) -> list[str]:
    """The commands of the README's first code block (it must be the first fence of the file)."""
    first = text.split("```", 1)
    if len(first) < 2 or not first[1].startswith("bash\n"):
        raise ValueError("README.md: expected the first code block to be a ```bash block")
    return bash_blocks(text)[0]


def docs_command(text: str) -> str:
    """The one command of a ```` ```bash ```` block that runs sphinx: the documented docs build."""
    found = [ln for block in bash_blocks(text) for ln in block if "sphinx" in ln]
    if len(found) != 1:
        raise ValueError(f"README.md: expected one documented sphinx command, found {found}")
    return found[0]


def main(argv: list[str]) -> int:
    text = README.read_text()
    if argv == ["opening"]:
        print("\n".join(opening_commands(text)))
    elif argv == ["docs"]:
        print(docs_command(text))
    else:
        print("usage: python3 .ci/readme.py {opening|docs}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
