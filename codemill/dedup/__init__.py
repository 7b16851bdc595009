"""Dedup stage: exact and MinHash-LSH near-duplicate removal, and benchmark decontamination."""
