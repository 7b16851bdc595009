"""The serve stage end to end: real Ray Serve on loopback (the shared local head), the official `openai`
client against it, every error of the API, 32 concurrent requests, a killed replica, a hung engine,
lm-evaluation-harness, and `codemill serve`.

One Serve instance for the module: two applications deployed together (the main one, two models; a "busy" one
with a one-request queue and fast health checks), and `codemill serve` deployed once beside them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from codemill.config import build_config
from codemill.serve.config import ServeConfig
from codemill.serve.engine import GenerationParams
from codemill.serve.loader import load_engine
from codemill.serve.testing import write_random_export
from codemill.train.model import PRESETS

openai = pytest.importorskip("openai")


KEY_ENV = "CODEMILL_TEST_SERVE_KEY"
KEY = "sk-test-0123456789"
PREFIX = "/t"
BUSY_PREFIX = "/busy"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two random-weight exports: name -> (URI, the training model it was written from)."""
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        uri = str(tmp_path_factory.mktemp(f"export-{name}"))
        out[name] = (uri, write_random_export(uri, PRESETS["tiny"], seed=seed, init_std=0.1))
    return out


@pytest.fixture(scope="module")
def exports(trained):
    return {name: uri for name, (uri, _) in trained.items()}


def _config(models: list[dict], **extra) -> ServeConfig:
    return build_config(ServeConfig, {"models": models, "max_batch_size": 32, "max_n": 4, "max_num_beams": 4,
                                      **extra})


@pytest.fixture(scope="module")
def server(ray_head, exports):
    import ray
    from ray import serve

    from codemill.raycluster import free_port
    from codemill.serve.app import application
    from codemill.serve.cli import wait_healthy

    if not ray.is_initialized():
        ray.init(address=ray_head.address, log_to_driver=False)
    port = free_port()
    os.environ[KEY_ENV] = KEY
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    model = {"dtype": "fp32", "device": "cpu", "cpus_per_replica": 0.25, "replicas": 1}
    cfg = _config([{**model, "name": "a", "input": exports["a"]}, {**model, "name": "b", "input": exports["b"]}],
                  api_key_env=KEY_ENV, max_queue=64)
    # The busy app also checks its replica's health often, so a broken one is replaced within the test.
    busy = _config([{**model, "name": "a", "input": exports["a"], "max_ongoing_requests": 1}],
                   max_batch_size=1, max_n=1, max_num_beams=1, max_queue=1, health_check_period_s=1.0,
                   health_check_timeout_s=6.0, engine_ping_timeout_s=3.0)
    try:
        # Deployed together: their replicas load their engines at the same time.
        serve.run_many([serve.RunTarget(application(cfg), name="codemill-test", route_prefix=PREFIX),
                        serve.RunTarget(application(busy), name="codemill-busy", route_prefix=BUSY_PREFIX)])
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base + PREFIX, 300)
        wait_healthy(base + BUSY_PREFIX, 300)
        yield {"base": base, "port": port, "ray": ray, "config": cfg}
    finally:
        # Every application goes with Serve: replicas hold CPUs of the shared head, which later tests (training)
        # need whole.
        serve.shutdown()
        os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def local(exports):
    """The same exports in an engine in this process: what the server must answer."""
    return {name: load_engine(uri, "fp32", "cpu", max_batch_size=32) for name, uri in exports.items()}


def client(server, key: str = KEY, prefix: str = PREFIX):
    return openai.OpenAI(base_url=server["base"] + prefix + "/v1", api_key=key, max_retries=0, timeout=120)


def local_greedy(loaded, prompt: str, max_tokens: int, **params) -> str:
    return local_greedy_batch(loaded, [prompt], max_tokens, **params)[0]


def local_greedy_batch(loaded, prompts: list[str], max_tokens: int, **params) -> list[str]:
    """Greedy completions from the in-process engine, decoded together (a request's output does not depend on
    its batch: tests/stages/test_serve_engine.py)."""
    outs: dict[int, list] = {i: [] for i in range(len(prompts))}
    for i, prompt in enumerate(prompts):
        loaded.engine.add_request(f"ref-{i}", loaded.tokenizer.encode(prompt).ids,
                                  GenerationParams(max_tokens=max_tokens, temperature=0, **params), outs[i].append)
    loaded.engine.run_until_done()
    return ["".join(d.text for o in outs[i] for d in o.deltas) for i in range(len(prompts))]


def test_health_models_and_a_completion(server, local):
    assert httpx.get(server["base"] + PREFIX + "/healthz").status_code == 200
    c = client(server)
    assert sorted(m.id for m in c.models.list().data) == ["a", "b"]
    for name in ("a", "b"):
        r = c.completions.create(model=name, prompt="def fibonacci(n):", max_tokens=10, temperature=0)
        assert r.object == "text_completion" and r.model == name and r.id
        assert r.choices[0].text == local_greedy(local[name], "def fibonacci(n):", 10)
        assert r.choices[0].finish_reason in ("length", "stop") and r.choices[0].index == 0
        prompt_tokens = len(local[name].tokenizer.encode("def fibonacci(n):").ids)
        assert r.usage.prompt_tokens == prompt_tokens
        assert r.usage.total_tokens == prompt_tokens + r.usage.completion_tokens
    a, b = (c.completions.create(model=m, prompt="int main() {", max_tokens=8, temperature=0) for m in "ab")
    assert a.choices[0].text != b.choices[0].text  # two different exports, each behind its own deployment


def test_streaming_equals_non_streamed(server):
    c = client(server)
    for extra in ({"temperature": 0}, {"temperature": 0.8, "seed": 42, "top_p": 0.9}):
        whole = c.completions.create(model="a", prompt="import numpy as np\n", max_tokens=16, **extra)
        chunks = list(c.completions.create(model="a", prompt="import numpy as np\n", max_tokens=16, stream=True,
                                           **extra))
        assert len(chunks) > 1
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.choices[0].text
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    raw = httpx.post(server["base"] + PREFIX + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": "a", "prompt": "x", "max_tokens": 3, "stream": True}, timeout=60)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_n_logprobs_echo_language_and_prompt_lists(server):
    c = client(server)
    r = c.completions.create(model="a", prompt="for i in range(", max_tokens=6, n=3, seed=5, temperature=1.0,
                             logprobs=2)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert len({ch.text for ch in r.choices}) > 1
    for ch in r.choices:
        lp = ch.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) > 0
        assert "".join(lp.tokens).startswith(ch.text[:1]) and all(v <= 0 for v in lp.token_logprobs)
        # the 2 most likely, plus the chosen token when it is not among them (as OpenAI's API does)
        assert all(len(t) <= 3 and tok in t for tok, t in zip(lp.tokens, lp.top_logprobs))
    e = c.completions.create(model="a", prompt="while True:", max_tokens=3, temperature=0, echo=True, logprobs=1,
                             extra_body={"language": "Python"})
    text = e.choices[0].text
    assert text.startswith("# language: Python\nwhile True:")
    assert e.choices[0].logprobs.token_logprobs[0] is None  # the first prompt token has no logprob
    assert "".join(e.choices[0].logprobs.tokens) == text
    multi = c.completions.create(model="a", prompt=["a = 1", "b = 2"], max_tokens=4, n=2, temperature=0)
    assert [ch.index for ch in multi.choices] == [0, 1, 2, 3]
    assert multi.choices[0].text == multi.choices[1].text and multi.choices[2].text == multi.choices[3].text
    ids = c.completions.create(model="a", prompt=[1, 2, 3, 4], max_tokens=4, temperature=0)
    assert ids.usage.prompt_tokens == 4
    beams = c.completions.create(model="a", prompt="def f(x):", max_tokens=5, n=2,
                                 extra_body={"num_beams": 4, "length_penalty": 1.0})
    assert len(beams.choices) == 2


def test_stop_and_max_tokens(server):
    c = client(server)
    full = c.completions.create(model="a", prompt="x = [", max_tokens=20, temperature=0).choices[0]
    if full.finish_reason == "length":
        assert full.text and len(full.text) > 3
    stop = full.text[4:7]
    cut = c.completions.create(model="a", prompt="x = [", max_tokens=20, temperature=0, stop=[stop]).choices[0]
    assert cut.text == full.text[:full.text.index(stop)] and cut.finish_reason == "stop"
    one = c.completions.create(model="a", prompt="x = [", max_tokens=1, temperature=0)
    assert one.usage.completion_tokens <= 1


def _error_of(exc) -> dict:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("kwargs, param", [
    ({"temperature": -0.5}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"), ({"n": 5}, "n"), ({"extra_body": {"num_beams": 9}}, "num_beams"),
    ({"logprobs": 6}, "logprobs"), ({"max_tokens": 2048}, "max_tokens"), ({"extra_body": {"language": "Klingon"}},
                                                                          "language"),
])
def test_bad_values_are_400(server, kwargs, param):
    c = client(server)
    with pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model="a", prompt="def f():", **{"max_tokens": 4, **kwargs})
    assert info.value.status_code == 400 and _error_of(info.value)["param"] == param


def test_other_errors_and_the_server_keeps_serving(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as info:
        c.completions.create(model="nope", prompt="x", max_tokens=2)
    assert _error_of(info.value)["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError) as info:
        client(server, key="wrong").completions.create(model="a", prompt="x", max_tokens=2)
    assert info.value.status_code == 401
    url = server["base"] + PREFIX + "/v1/completions"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad = httpx.post(url, content=b'{"model": "a", "prompt": ', headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert httpx.post(url, json={"model": "a"}, headers=headers).status_code == 400  # no prompt
    assert httpx.post(url, json={"model": "a", "prompt": "x", "n": "two"}, headers=headers).status_code == 400
    assert httpx.post(url, json={"model": "a", "prompt": []}, headers=headers).status_code == 400
    assert httpx.post(url, json={"model": "a", "prompt": [-1]}, headers=headers).status_code == 400
    assert httpx.post(url, json={"model": "a", "prompt": "x"}).status_code == 401  # no key at all
    # the bounded queue: one slot, one waiting place; a burst gets 503s and the rest are answered
    busy = server["base"] + BUSY_PREFIX + "/v1/completions"

    async def burst():
        async with httpx.AsyncClient(timeout=120) as h:
            return await asyncio.gather(*(h.post(busy, json={"prompt": "x", "max_tokens": 64, "temperature": 0})
                                          for _ in range(12)))

    statuses = [r.status_code for r in asyncio.run(burst())]
    assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}
    r503 = next(r for r in asyncio.run(burst()) if r.status_code == 503)
    assert set(r503.json()["error"]) == {"message", "type", "param", "code"}
    assert c.completions.create(model="a", prompt="x", max_tokens=2).choices[0].text is not None


def test_a_prompt_past_the_context_is_refused_or_keeps_its_last_tokens(server, local):
    """Refused with OpenAI's context_length_exceeded; with vLLM's truncate_prompt_tokens the prompt keeps its last
    tokens (the completion of those tokens alone); the eval's HTTP generator fits such a prompt itself, as the
    in-process engine does."""
    from codemill.eval.generate import HTTPGenerator

    loaded = local["a"]
    context, tokenizer = loaded.context_length, loaded.tokenizer
    line = "total = total + 1\n"
    prompt = line * (context // len(tokenizer.encode(line, add_special_tokens=False).ids) + 8)
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).completions.create(model="a", prompt=prompt, max_tokens=8, temperature=0)
    assert refused.value.code == "context_length_exceeded" and "truncate_prompt_tokens" in str(refused.value)

    keep = context - 8
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids[-keep:]
    outs: list = []
    loaded.engine.add_request("ref-truncated", ids, GenerationParams(max_tokens=8, temperature=0), outs.append)
    loaded.engine.run_until_done()
    expected = "".join(d.text for o in outs for d in o.deltas)
    out = client(server).completions.create(model="a", prompt=prompt, max_tokens=8, temperature=0,
                                            extra_body={"truncate_prompt_tokens": keep})
    assert out.choices[0].text == expected and out.usage.prompt_tokens == keep

    gen = HTTPGenerator(server["base"] + PREFIX, model="a", api_key_env=KEY_ENV, concurrency=1)
    assert gen.generate([prompt], 1, 0.0, 1.0, 8, [[]]) == [[expected]]
    assert gen.context == context


def test_32_concurrent_requests_all_answered_correctly(server, local):
    prompts = [f"def function_{i}(x):\n    return x + {i}" for i in range(32)]
    expected = local_greedy_batch(local["b"], prompts, 12)

    async def run():
        c = openai.AsyncOpenAI(base_url=server["base"] + PREFIX + "/v1", api_key=KEY, max_retries=0, timeout=300)
        return await asyncio.gather(*(c.completions.create(model="b", prompt=p, max_tokens=12, temperature=0)
                                      for p in prompts))

    got = asyncio.run(run())
    assert [r.choices[0].text for r in got] == expected


def test_codemill_serve_command(server, exports):
    """`python -m codemill.serve`: deploys, prints the URL once healthy, answers, stops on SIGTERM. Asked for
    another port than the running Serve's, it serves on the running proxy's port (one per cluster) and says so.
    (`--smoke`, the demo DAG's last step, runs in tests/e2e/test_demo_dag.py.)"""
    from codemill.raycluster import free_port

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "codemill.serve", "--input", exports["a"], "--port",
                             str(free_port()), "--host", "127.0.0.1", "--set", "models.0.name=cli",
                             "--set", "models.0.dtype=fp32", "--set", "models.0.cpus_per_replica=0.25"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if "codemill serve:" in line and "/v1" in line:
                break
        assert " at " in lines[-1], "".join(lines)
        assert any(f"HTTP proxy on port {server['port']}" in line for line in lines), "".join(lines)
        url = lines[-1].split(" at ")[1].split()[0]
        assert url.startswith(f"http://127.0.0.1:{server['port']}/"), url
        c = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
        assert c.completions.create(model="cli", prompt="x", max_tokens=3).usage.completion_tokens >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + out
    assert httpx.get(url.removesuffix("/v1") + "/healthz").status_code == 404  # the app is gone


def test_the_smoke_check_asks_every_model(server, capsys):
    """The smoke check `codemill serve --smoke` runs once deployed: one greedy completion from every model,
    with the API key; a model that does not answer fails it."""
    from codemill.serve.cli import smoke_check

    cfg = server["config"]
    assert smoke_check(server["base"] + PREFIX, cfg)
    printed = capsys.readouterr().out
    assert "smoke a:" in printed and "smoke b:" in printed and "'completion_tokens': 16" in printed
    missing = cfg.model_copy(update={"models": [*cfg.models, cfg.models[0].model_copy(update={"name": "gone"})]})
    assert not smoke_check(server["base"] + PREFIX, missing)


def test_bad_config_is_refused_before_anything_starts(tmp_path):
    from codemill.serve.cli import main

    assert main(["--set", "max_batch_size=0", "--input", str(tmp_path)]) == 2
    assert main(["--set", "models.0.dtype=int4", "--input", str(tmp_path)]) == 2
    assert main([]) == 2  # nothing to serve


def test_killed_replica_is_restarted(server):
    """Kill model b's replica while requests run: Serve starts a new one and later requests succeed."""
    import ray
    from ray.util.state import list_actors

    def replica():
        alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
                 if "codemill-test" in a.class_name and "model-b" in a.class_name]
        return alive[0] if alive else None

    victim = replica()
    assert victim is not None
    c = client(server)

    async def during():
        ac = openai.AsyncOpenAI(base_url=server["base"] + PREFIX + "/v1", api_key=KEY, max_retries=0, timeout=120)
        streaming = [asyncio.Event() for _ in range(4)]

        async def stream(started: asyncio.Event) -> None:
            async for _ in await ac.completions.create(model="b", prompt="x", max_tokens=200, temperature=0,
                                                       stream=True):
                started.set()

        tasks = [asyncio.create_task(stream(e)) for e in streaming]
        # the replica dies with requests mid-stream: each has had its first chunk
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in streaming)), 120)
        ray.kill(ray.get_actor(victim.name, namespace=victim.ray_namespace), no_restart=True)
        return await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(during())
    deadline, answered = time.time() + 240, False
    while time.time() < deadline and not answered:  # until Serve's new replica of model b answers
        try:
            answered = bool(c.completions.create(model="b", prompt="x", max_tokens=3).choices)
        except (openai.APIStatusError, openai.APIConnectionError):
            time.sleep(0.5)
    assert answered, "no replica of model b answered within 240 s of the kill"
    new = replica()
    assert new is not None and new.actor_id != victim.actor_id


def test_metrics_reach_prometheus(server):
    """The codemill_serve_* series, tagged by model and status, on the node's Prometheus endpoint."""
    import ray

    client(server).completions.create(model="a", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client(server).completions.create(model="a", prompt="x", max_tokens=0)
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    deadline, text = time.time() + 60, ""
    wanted = ("codemill_serve_requests_total", "codemill_serve_ttft_s", "codemill_serve_tokens_generated_total",
              "codemill_serve_framework_time_s", "codemill_serve_engine_time_s", "codemill_serve_running_batch_size")
    while time.time() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(w in text for w in wanted) and 'status="400"' in text:
            break
        time.sleep(2)
    assert all(w in text for w in wanted), [w for w in wanted if w not in text]
    assert 'status="400"' in text
    # Ray's exporter may prefix the name (ray_...) and suffix counters; the tags are what matter here.
    lines = [ln for ln in text.splitlines() if not ln.startswith("#") and "codemill_serve_requests_total" in ln]
    assert any('model="a"' in ln and 'status="200"' in ln for ln in lines), lines


# ----------------------------------------------------------------------------- isolation
GIANT = b'{"model": "a", "prompt": "' + b"x" * (5 * 2**20) + b'"}'
BAD_REQUESTS = [  # (method, path, raw body) -> a 4xx in OpenAI's shape, each failing alone
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "top_k": 9223372036854775808}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "temperature": NaN}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "temperature": 1e999}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "max_tokens": -1}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "max_tokens": 99999999999999999999}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": {"text": "x"}}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "n": 2.5}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "a\\ud800b"}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "stop": ["\\udc00"]}'),
    ("POST", "/v1/completions", b"\xff\xfe\x00"),
    ("POST", "/v1/completions", GIANT),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "stop": [' + b",".join(b'"s%d"' % i for i in range(2000)) + b"]}"),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "logit_bias": {"99999999": 5}}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "logit_bias": {"5": 1e308}}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "n": 3, "best_of": 2}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "num_beams": 2, "n": 4}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "num_beams": 3, "logprobs": 2}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "suffix": "}"}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": [1, 2, 99999999]}'),
    ("POST", "/v1/completions", b'{"model": "a", "prompt": "x", "seed": -99999999999999999999999}'),
    ("POST", "/v1/completions", b'{"model": 7, "prompt": "x"}'),
    ("POST", "/v1/completions", b"[" * 50_000),
    ("GET", "/v1/nope", b""),
    ("POST", "/v1/models", b"{}"),
    ("GET", "/v1/completions", b""),
    ("POST", "/tokenize", b'{"model": "a", "prompt": "\\ud800"}'),
    ("POST", "/detokenize", b'{"model": "a", "tokens": [-5]}'),
]


def test_bad_requests_fail_alone_beside_a_long_stream(server, local):
    """A long streamed completion decodes while every kind of bad request arrives: each bad one gets its 4xx in
    OpenAI's shape, and the long one ends as it would alone."""
    base = server["base"] + PREFIX
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    long_body = {"model": "a", "prompt": "def long_running(x):", "max_tokens": 150, "temperature": 0,
                 "stream": True, "ignore_eos": True}

    streaming = asyncio.Event()

    async def stream_text(h) -> str:
        text = ""
        async with h.stream("POST", base + "/v1/completions", json=long_body, headers=headers) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk, chunk
                    text += "".join(c["text"] for c in chunk["choices"])
                    streaming.set()
        return text

    async def run():
        async with httpx.AsyncClient(timeout=300) as h:
            long_task = asyncio.create_task(stream_text(h))
            await asyncio.wait_for(streaming.wait(), 120)  # the bad requests arrive while it decodes
            answers = await asyncio.gather(*(h.request(m, base + path, content=raw, headers=headers)
                                             for m, path, raw in BAD_REQUESTS))
            tiny = await h.post(base + "/v1/completions", headers=headers, json={
                "model": "a", "prompt": "def long_running(x):", "max_tokens": 6, "temperature": 1e-39})
            return await long_task, answers, tiny

    text, answers, tiny = asyncio.run(run())
    assert text == local_greedy(local["a"], "def long_running(x):", 150, ignore_eos=True)
    for (method, path, raw), r in zip(BAD_REQUESTS, answers):
        assert 400 <= r.status_code < 500, (method, path, raw[:80], r.status_code, r.text[:300])
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text[:300]
    statuses = {path + raw[:30].decode("latin-1"): r.status_code for (_, path, raw), r in zip(BAD_REQUESTS, answers)}
    assert answers[BAD_REQUESTS.index(BAD_REQUESTS[10])].status_code == 413, statuses
    assert answers[-5].status_code == 404 and answers[-4].status_code == 405, statuses
    # a temperature below the greedy threshold decodes greedily (it sampled from NaNs before)
    assert tiny.status_code == 200 and tiny.json()["choices"][0]["text"] == local_greedy(
        local["a"], "def long_running(x):", 6)


def test_scoring_penalties_and_bias(server, local):
    """echo + logprobs with max_tokens 0 scores the prompt; the end-of-text token keeps its logprob; the
    chosen token is always among top_logprobs; logit_bias and penalties change what is generated."""
    c = client(server)
    ids = local["a"].tokenizer.encode("def add(a, b):\n    return a + b\n").ids
    scored = c.completions.create(model="a", prompt=ids, max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = scored.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) and lp.token_logprobs[0] is None and scored.usage.completion_tokens == 0
    one = c.completions.create(model="a", prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0)
    one_lps = one.choices[0].logprobs.token_logprobs
    assert one_lps[0] is None and one_lps[1:len(ids)] == pytest.approx(lp.token_logprobs[1:], abs=1e-5)
    assert all(tok in top for tok, top in zip(one.choices[0].logprobs.tokens[1:], one.choices[0].logprobs.top_logprobs[1:]))
    # force end-of-text first: its token and logprob are reported, its text is not
    eot = c.completions.create(model="a", prompt=ids, max_tokens=4, logprobs=2, temperature=0,
                               logit_bias={"50256": 100})
    ch = eot.choices[0]
    assert ch.text == "" and ch.finish_reason == "stop" and ch.logprobs.tokens == ["<|endoftext|>"]
    assert ch.logprobs.token_logprobs[0] <= 0 and "<|endoftext|>" in ch.logprobs.top_logprobs[0]
    # a token banned by logit_bias never appears; a frequency penalty stops a greedy loop repeating a token
    free = c.completions.create(model="a", prompt="x = x + x + x", max_tokens=12, temperature=0,
                                extra_body={"ignore_eos": True})
    first = local["a"].tokenizer.encode(free.choices[0].text).ids[0]
    banned = c.completions.create(model="a", prompt="x = x + x + x", max_tokens=12, temperature=0,
                                  logit_bias={str(first): -100}, extra_body={"ignore_eos": True})
    assert first not in local["a"].tokenizer.encode(banned.choices[0].text).ids
    penalised = c.completions.create(model="a", prompt="x = x + x + x", max_tokens=12, temperature=0,
                                     frequency_penalty=2.0, presence_penalty=2.0, extra_body={"ignore_eos": True},
                                     logprobs=0)
    toks = penalised.choices[0].logprobs.tokens
    assert penalised.choices[0].text != free.choices[0].text and len(set(toks)) >= len(toks) - 2


def test_a_hung_engine_fails_the_health_check_and_serve_replaces_the_replica(server):
    """SIGSTOP the engine process of the busy app's replica: its pings time out, check_health raises, and Serve
    starts a new replica (with a new engine) that answers."""
    from ray import serve

    handle = serve.get_deployment_handle("model-a", app_name="codemill-busy")
    pid = handle.ready.remote().result(timeout_s=60)["engine_pid"]
    os.kill(pid, signal.SIGSTOP)
    url = server["base"] + BUSY_PREFIX + "/v1/completions"
    deadline, new_pid = time.time() + 240, pid
    while time.time() < deadline:
        try:
            new_pid = handle.ready.remote().result(timeout_s=10)["engine_pid"]
        except Exception:
            new_pid = pid
        if new_pid != pid:
            break
        time.sleep(1)
    assert new_pid != pid, "the replica with the stopped engine was not replaced"
    deadline, status = time.time() + 120, None
    while time.time() < deadline and status != 200:
        status = httpx.post(url, json={"prompt": "x", "max_tokens": 2}, timeout=60).status_code
        time.sleep(0.5)
    assert status == 200
    with pytest.raises(ProcessLookupError):  # the stopped engine died with its replica
        for _ in range(30):
            os.kill(pid, 0)
            time.sleep(1)


# ----------------------------------------------------------------------------- lm-evaluation-harness
LM_EVAL_TASKS = """
task: cm_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {choice}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""
LM_EVAL_GEN = """
task: cm_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {gen}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint", "\\n```", "<|endoftext|>", "\\n\\n\\n"]
  max_gen_toks: 24
  do_sample: false
metric_list:
  - metric: exact_match
"""


def test_lm_evaluation_harness_runs_against_the_server(server, local, trained, tmp_path):
    """lm-evaluation-harness's local-completions model, offline, against the live server: a loglikelihood task
    (echo + logprobs, tokenised through the server's /tokenize) and a generation task with eight stop strings.
    Its loglikelihoods are the training model's and its generations the local engine's."""
    import json

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    choice, gen = tmp_path / "choice.jsonl", tmp_path / "gen.jsonl"
    docs = [{"context": "def add(a, b):\n    return", "choices": [" a + b", " a - b", " None"], "answer": 0},
            {"context": "for i in range(10):\n    x =", "choices": [" i", " None"], "answer": 1}]
    choice.write_text("".join(json.dumps(d) + "\n" for d in docs))
    prompts = ["def fibonacci(n):\n", "import os\n\ndef main():\n"]
    gen.write_text("".join(json.dumps({"prompt": p, "target": "x"}) + "\n" for p in prompts))
    (tmp_path / "cm_choice.yaml").write_text(LM_EVAL_TASKS.format(choice=choice))
    (tmp_path / "cm_gen.yaml").write_text(LM_EVAL_GEN.format(gen=gen))
    os.environ.update({"OPENAI_API_KEY": KEY, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    base = server["base"] + PREFIX
    results = simple_evaluate(
        model="local-completions", tasks=["cm_choice", "cm_gen"], task_manager=TaskManager(include_path=str(tmp_path)),
        model_args={"base_url": base + "/v1/completions", "model": "a", "auth_token": KEY, "max_retries": 1,
                    "num_concurrent": 2, "tokenized_requests": True, "max_length": 2048},
        log_samples=True, apply_chat_template=False)
    assert set(results["results"]) == {"cm_choice", "cm_gen"}
    model = local["a"]
    tok = model.tokenizer
    ref_model = trained["a"][1]
    scored = 0
    for sample in results["samples"]["cm_choice"]:
        # (context, continuation) as lm-eval asked: its target delimiter (a space) precedes each choice
        for (context, continuation), resp in zip(sample["arguments"], sample["filtered_resps"]):
            ctx_ids = tok.encode(context).ids  # as lm-eval splits a pair: the whole, less the context
            cont_ids = tok.encode(context + continuation).ids[len(ctx_ids):]
            with torch.no_grad():
                lps = torch.log_softmax(ref_model(torch.tensor([ctx_ids + cont_ids]))[0].float(), dim=-1)
            want = sum(float(lps[len(ctx_ids) - 1 + j, t]) for j, t in enumerate(cont_ids))
            assert float(resp[0]) == pytest.approx(want, abs=1e-3), (context, continuation)
            scored += 1
    assert scored == sum(len(d["choices"]) for d in docs)
    gens = {s["doc"]["prompt"]: s["filtered_resps"][0] for s in results["samples"]["cm_gen"]}
    until = ["\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n```", "<|endoftext|>", "\n\n\n"]
    for p in prompts:
        want = local_greedy(model, p, 24, stop=tuple(until))
        assert gens[p] == want, (p, gens[p], want)
