"""The TOKENIZE stage: CodeGeeX's tokenizer, language tags, packing into rows of 2,049 ids, and Arrow IPC
shards with a memory-mapped reader (`codemill.tokenize.reader.ShardReader`) for training.

Modules: `tokenizer` (the tokenizer), `split` (held-out documents, shuffle keys), `pack` (rows),
`shards` (the file format), `reader` (random access), `stage` (the Ray wiring), `config`.
"""
