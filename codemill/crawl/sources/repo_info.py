"""What the `git` and `local` sources know about a repository without an API: a metadata file
(stars, size, license, main language), the size on disk, and names unique within a crawl.

A metadata file maps a repository's full name (as the source names it: `owner/name` for git URLs,
`local/<folder>` for local paths) to its facts. YAML or JSON, as a mapping or a list of records:

    octo/demo: {stars: 12, size_kb: 340}          - {full_name: octo/demo, stars: 12, size_kb: 340}

or CSV with a header row:

    full_name,stars,size_kb
    octo/demo,12,340

Keys: stars, size_kb, license, main_language, default_branch; any may be left out (empty in CSV).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import yaml
from pydantic import Field, StrictInt, ValidationError

from codemill.config import ConfigError, StrictModel, format_validation_error
from codemill.crawl.walk import FILE, walk

KIB = 1024
_CSV_INT_FIELDS = ("stars", "size_kb")
# Git's own storage is not the repository's content; GitHub's `size` is not comparable to it either.
SIZE_IGNORED_DIRS = frozenset({".git"})


class RepoMetadata(StrictModel):
    stars: StrictInt | None = Field(None, ge=0)
    size_kb: StrictInt | None = Field(None, ge=0)
    license: str | None = None
    main_language: str | None = None
    default_branch: str | None = None


def _records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        # CSV has only strings; the counts are typed here, as YAML and JSON type them (config is strict).
        return [{k: int(v) if k in _CSV_INT_FIELDS and v.strip().isdigit() else v
                 for k, v in row.items() if v not in ("", None)} for row in rows]
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"metadata file {path}: not valid {suffix.lstrip('.').upper()}: {exc}") from None
    if data is None:
        return []
    if isinstance(data, dict):
        if not all(isinstance(v, dict) for v in data.values()):
            raise ConfigError(f"metadata file {path}: each repository must map to a mapping of its facts, "
                              "e.g. `octo/demo: {stars: 12}`")
        return [{"full_name": name, **facts} for name, facts in data.items()]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    raise ConfigError(f"metadata file {path}: expected a mapping of full_name -> facts, or a list of records")


def existing_metadata_file(path: str | None) -> str | None:
    """The `metadata` validator of the git and local sources: a named file must exist."""
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"metadata file {path} does not exist")
    return path


def load_metadata(path: str | None) -> dict[str, RepoMetadata]:
    """full_name -> facts; a ConfigError names the file and the entry that is wrong."""
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"metadata file {path} does not exist")
    if file.suffix.lower() not in (".yaml", ".yml", ".json", ".csv"):
        raise ConfigError(f"metadata file {path}: use .yaml, .yml, .json or .csv")
    result: dict[str, RepoMetadata] = {}
    for i, record in enumerate(_records(file)):
        name = record.pop("full_name", None)
        if not name:
            raise ConfigError(f"metadata file {path}: record {i + 1} has no full_name")
        if name in result:
            raise ConfigError(f"metadata file {path}: {name} is listed twice")
        try:
            result[str(name)] = RepoMetadata.model_validate(record)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"metadata file {path}, entry {name}")) from None
    return result


def size_kb_on_disk(path: str) -> int:
    """KB (rounded up) of an archive file, or of a folder's regular files outside `.git`, links not
    followed, walked iteratively (a hostile tree may be thousands of folders deep)."""
    if not os.path.isdir(path):
        return math.ceil(os.path.getsize(path) / KIB)
    entries = walk(path, lambda _path, name: name not in SIZE_IGNORED_DIRS)
    return math.ceil(sum(e.size for e in entries if e.kind == FILE) / KIB)


def unique_names(names: list[str]) -> list[str]:
    """The names in order, a repeated one becoming `name~2`, `name~3`, ... (never an existing name).
    Names equal but for case count as repeated: the crawl keys its output by the lower-cased name."""
    taken = {n.casefold() for n in names}
    seen: set[str] = set()
    result = []
    for name in names:
        if name.casefold() in seen:
            k = 2
            while f"{name}~{k}".casefold() in taken:
                k += 1
            name = f"{name}~{k}"
            taken.add(name.casefold())
        seen.add(name.casefold())
        result.append(name)
    return result
