"""The filter stage: SPEC §1's file rules and language identification on Arrow batches (rules, textstats,
autogen, langid, pep8, stats), wired to Ray Data in stage.py."""
