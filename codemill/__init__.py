"""codemill: the CodeGeeX recipe, end to end on Ray."""

__version__ = "0.1.0"
