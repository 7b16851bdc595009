"""The serve stage: a generation engine for CodeGeeX exports (KV cache, continuous batching, sampling, beam
search, INT8; no Ray) and its Ray Serve application with an OpenAI-compatible HTTP API (app.py, stage.py)."""
