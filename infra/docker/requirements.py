"""Print codemill's requirements and those of the given extras, read from pyproject.toml alone, one a line, so
the image installs every dependency before it copies the code: a code change then rebuilds one thin layer
(`pip install --no-deps` of codemill itself) instead of reinstalling the dependencies.

    python requirements.py pyproject.toml train serve --except torch > requirements.txt

`--except NAME`: leave a requirement out (the image installs torch on its own, from PyTorch's CUDA index,
so the resolver is never asked to weigh that build's pins against constraints.txt).

Python 3.11+ (tomllib), which the image runs.
"""

from __future__ import annotations

import argparse
import re
import sys

import tomllib


def name_of(requirement: str) -> str:
    """The project name of a requirement string, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def requirements(pyproject_text: str, extras: list[str], excluded: tuple[str, ...] = ()) -> list[str]:
    project = tomllib.loads(pyproject_text)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"requirements.py: no extra {unknown} in pyproject.toml (it has {sorted(optional)})")
    listed = [*project["dependencies"], *(r for e in extras for r in optional[e])]
    skip = {name_of(n) for n in excluded}
    return [r for r in dict.fromkeys(listed) if name_of(r) not in skip]


def main(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pyproject")
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--except", dest="excluded", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv)
    with open(args.pyproject, encoding="utf-8") as f:
        return requirements(f.read(), args.extras, tuple(args.excluded))


if __name__ == "__main__":
    print("\n".join(main(sys.argv[1:])))
