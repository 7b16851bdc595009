"""Language identification by file suffix and the repository's main language (SPEC §1).

- A suffix that names one of the 23 languages (`codemill.languages.EXTENSION_TO_LANGUAGE`) gives that
  language, whatever the repository's main language.
- An ambiguous suffix (`AMBIGUOUS_EXTENSIONS`, e.g. `.h`: C, C++, Objective-C, Objective-C++, Cuda) takes
  the repository's main language when that is one of its candidates (a `.h` in a C++ repository is C++),
  and its first candidate otherwise (a `.h` in a Python repository, or with no main language, is C).
- Any other suffix, no suffix, or a language outside the configured list gives no language: the filter
  drops the file with reason `language`.

Suffixes are compared lower-cased; the repository language is read in the paper's spelling after
`codemill.languages.normalize_language` (GitHub's "CUDA" is "Cuda").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from codemill.languages import AMBIGUOUS_EXTENSIONS, EXTENSION_TO_LANGUAGE, normalize_language

_KEY_SEPARATOR = "\x00"  # cannot occur in a suffix or a language name


def language_of(ext: str | None, repo_language: str | None, languages: Collection[str]) -> str | None:
    """The language of one file, or None when it is not one of `languages`."""
    ext = (ext or "").lower()
    language = EXTENSION_TO_LANGUAGE.get(ext)
    if ext in AMBIGUOUS_EXTENSIONS:
        candidates = AMBIGUOUS_EXTENSIONS[ext]
        main = normalize_language(repo_language)
        language = main if main in candidates else candidates[0]
    return language if language in languages else None


def identify_languages(ext: pa.Array | pa.ChunkedArray, repo_language: pa.Array | pa.ChunkedArray,
                       languages: Iterable[str]) -> pa.Array:
    """`language_of` for a whole batch: decided once per distinct (suffix, repository language) pair,
    of which a batch holds a few dozen, then spread back to the rows."""
    allowed = tuple(languages)
    keys = pc.binary_join_element_wise(pc.fill_null(ext, ""), pc.fill_null(repo_language, ""), _KEY_SEPARATOR)
    encoded = pc.dictionary_encode(keys)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks()
    answers = []
    for key in encoded.dictionary.to_pylist():
        key_ext, key_repo_language = key.split(_KEY_SEPARATOR)
        answers.append(language_of(key_ext, key_repo_language or None, allowed))
    return pa.array(answers, pa.string()).take(encoded.indices)
