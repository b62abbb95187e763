"""Print the uv flags that make `uv pip install` look where pip is configured to look.

`make install` installs with uv (parallel unzip and bytecode compilation: 35 s against 110 s for pip here,
docs/decisions.md), but uv reads no pip.conf and no PIP_* variables. A machine whose pip is pointed at a local
mirror or capped by a constraints file must get the same from uv, or uv would download other builds (several GB of
CUDA wheels for torch). This script reads `pip config list` (environment, then [install], then [global], pip's own
precedence) and prints the matching flags, one per line, for the Makefile.

    python .ci/uv_args.py            # flags for this machine's pip configuration
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip setting -> uv flag; the values of these settings are whitespace-separated lists
LIST_FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}
PRECEDENCE = (":env:", "install", "global")  # pip: environment variables over [install] over [global]


def uv_args(config_lines: list[str]) -> list[str]:
    """Translate `pip config list` output (lines of `section.key='value'`, the value as Python's repr) into uv
    command-line flags."""
    settings: dict[str, dict[str, str]] = {}
    for line in config_lines:
        name, sep, quoted = line.strip().partition("=")
        section, _, key = name.rpartition(".")
        if sep and section in PRECEDENCE:
            settings.setdefault(key, {})[section] = ast.literal_eval(quoted)
    args: list[str] = []
    for key, values in settings.items():
        value = next(values[section] for section in PRECEDENCE if section in values)
        if key in LIST_FLAGS:
            for item in value.split():
                args += [LIST_FLAGS[key], item]
        elif key == "no-index" and value.lower() in ("1", "true", "yes", "on"):
            args.append("--no-index")
    if any(flag in args for flag in ("--extra-index-url", "--find-links")):
        args += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best version from any index
    return args


def main() -> None:
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
    print("\n".join(uv_args(listed.stdout.splitlines())))


if __name__ == "__main__":
    main()
