"""Where the eval stage's completions come from, behind one call: `generate(prompts, ns, max_tokens, stops,
seeds) -> for each prompt its completions` (the shape MTPB's turn-by-turn generation calls too).

- an OpenAI-compatible endpoint (`--endpoint`, codemill.eval.generate.HTTPGenerator);
- codemill's serve engine on Ray actors (`--model`): one per GPU (continuous batching inside each), or CPU
  actors when the cluster has no GPU; prompts dealt round-robin in chunks, so progress shows as chunks finish.
Seeds are fixed per prompt, so how prompts are spread over actors does not change what each one samples.
"""

from __future__ import annotations

import logging

from codemill import storage
from codemill.eval.config import EvalConfig
from codemill.eval.generate import HTTPGenerator, per_prompt
from codemill.eval.progress import Progress
from codemill.stages import MANIFEST_FILE, TRAIN_EXPORT

log = logging.getLogger("codemill.eval")

CONFIG_FILE = "config.json"  # an export's (codemill.train.export.CONFIG_FILE, not imported: it needs torch)
CHUNK_PROMPTS = 16           # prompts per actor call: the unit of progress
WAIT_S = 60.0                # one wait for a chunk; the log says what is pending after each


def resolve_model(uri: str) -> str:
    """The export folder: `uri` itself, or the export/ of the train stage output `uri` names."""
    uri = storage.absolute(uri)
    if storage.exists(storage.join(uri, MANIFEST_FILE)) and storage.exists(storage.join(uri, TRAIN_EXPORT,
                                                                                         CONFIG_FILE)):
        return storage.join(uri, TRAIN_EXPORT)
    return uri


class EndpointGeneration:
    def __init__(self, endpoint: str, api_key_env: str | None, config: EvalConfig):
        g = self.g = config.generation
        self.http = HTTPGenerator(endpoint, g.model_name, api_key_env, g.batch_size, g.concurrency,
                                  g.request_timeout_s, g.max_retries, g.n_per_request, g.seed)

    def generate(self, prompts, ns, max_tokens, stops, seeds) -> list[list[str]]:
        # A prompt whose n is split over several requests counts once per request.
        requests = sum(-(-n // self.g.n_per_request) for n in per_prompt(ns, len(prompts)))
        return self.http.generate(prompts, ns, self.g.temperature, self.g.top_p, max_tokens, stops,
                                  progress=Progress("generated prompts (per request)", requests))

    def close(self) -> None:
        pass


class _EngineActor:
    def __init__(self, export: str, device: str, max_batch_size: int, seed: int):
        from codemill.eval.generate import EngineGenerator

        self.gen = EngineGenerator(export, device=device, max_batch_size=max_batch_size, seed=seed)

    def generate(self, prompts, n, temperature, top_p, max_tokens, stops, seeds):
        return self.gen.generate(prompts, n, temperature, top_p, max_tokens, stops, seeds=seeds)


class EngineGeneration:
    """codemill's serve engine on Ray actors; kept across calls (MTPB generates turn by turn)."""

    def __init__(self, export: str, config: EvalConfig):
        from codemill.raysupport import ensure_ray

        self.ray = ensure_ray()
        g = self.g = config.generation
        gpus = float(self.ray.cluster_resources().get("GPU", 0)) if g.device != "cpu" else 0.0
        use_gpu = gpus > 0 and g.gpus_per_actor > 0
        count = g.actors or (max(1, int(gpus // g.gpus_per_actor)) if use_gpu else 1)
        self.device = ("cuda" if use_gpu else "cpu") if g.device == "auto" else g.device
        actor_cls = self.ray.remote(_EngineActor).options(num_gpus=g.gpus_per_actor if use_gpu else 0,
                                                           num_cpus=g.cpus_per_actor)
        self.actors = [actor_cls.remote(export, self.device, g.max_batch_size, g.seed) for _ in range(count)]
        log.info("eval: generating on %d engine actor(s) (%s)", len(self.actors), self.device)

    def generate(self, prompts, ns, max_tokens, stops, seeds) -> list[list[str]]:
        ns, limits = per_prompt(ns, len(prompts)), per_prompt(max_tokens, len(prompts))
        chunks = [list(range(i, min(i + CHUNK_PROMPTS, len(prompts)))) for i in range(0, len(prompts), CHUNK_PROMPTS)]
        results: list[list[str]] = [[] for _ in prompts]
        pending = {}
        for c, idx in enumerate(chunks):
            actor = self.actors[c % len(self.actors)]  # an actor's calls queue up in order
            ref = actor.generate.remote([prompts[i] for i in idx], [ns[i] for i in idx], self.g.temperature,
                                        self.g.top_p, [limits[i] for i in idx], [stops[i] for i in idx],
                                        [seeds[i] for i in idx])
            pending[ref] = idx
        progress = Progress("generated prompts", len(prompts))
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
            if not done:
                log.info("eval: waiting for %d chunk(s) of %d prompts from the engine actors", len(pending),
                         CHUNK_PROMPTS)
            for ref in done:
                idx = pending.pop(ref)
                for i, texts in zip(idx, self.ray.get(ref)):
                    results[i] = texts
                progress.advance(len(idx))
        return results

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def open_generation(model: str | None, endpoint: str | None, api_key_env: str | None, config: EvalConfig):
    """The generation the run asks for: an endpoint, or an export through codemill's serve engine."""
    if endpoint:
        return EndpointGeneration(endpoint, api_key_env, config)
    return EngineGeneration(resolve_model(model), config)
