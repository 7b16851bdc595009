"""The generation engine on CPU against the training model: paged cache vs recompute, logprobs, beam search vs
exhaustive search, seeds, n, stop strings, echo logprobs, max_tokens, the context limit, INT8, the queue,
preemption, chunked prefill, overlapped steps and a failing request beside others."""

from __future__ import annotations

import itertools

import pytest
import torch

from codemill import humaneval
from codemill.serve.decoder import Decoder, ForwardBatch, PrefillChunk
from codemill.serve.engine import Engine, GenerationParams, QueueFull
from codemill.serve.loader import load_engine
from codemill.serve.testing import random_model, write_random_export
from codemill.train.model import PRESETS, ModelConfig

VALID = 50_400  # CodeGeeX's tokens; the rest of the 52,224 embedding rows are padding


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("export"))
    model = write_random_export(uri, PRESETS["tiny"], seed=3, init_std=0.1)
    return uri, model


def collect(engine: Engine, requests: dict, joins: dict | None = None) -> dict:
    """Run requests {id: (prompt, params)}; `joins` {step: {id: (prompt, params)}} enter later. -> {id: [outputs]}."""
    outs: dict[str, list] = {}

    def emit(out):
        outs.setdefault(out.request_id, []).append(out)

    for rid, (prompt, params) in requests.items():
        engine.add_request(rid, prompt, params, emit)
    step = 0
    while engine.has_work() or (joins and any(k > step for k in joins)):
        for rid, (prompt, params) in (joins or {}).get(step, {}).items():
            engine.add_request(rid, prompt, params, emit)
        engine.step()
        step += 1
    return outs


def tokens_of(outputs, index: int = 0) -> list[int]:
    return [t for o in outputs for d in o.deltas if d.index == index for t in d.token_ids]


def text_of(outputs, index: int = 0) -> str:
    return "".join(d.text for o in outputs for d in o.deltas if d.index == index)


def finish_of(outputs, index: int = 0) -> str | None:
    return [d.finish_reason for o in outputs for d in o.deltas if d.index == index][-1]


def prompt_logits(decoder: Decoder, ids: list[int]) -> torch.Tensor:
    """Logits at every position of one prompt, prefilled into blocks 1.. of the decoder's cache."""
    bs = 16
    if decoder.kv_cache is None:
        decoder.allocate_cache(-(-len(ids) // bs) + 2, bs)
    n = len(ids)
    blocks = torch.arange(1, -(-n // bs) + 1)
    slots = torch.tensor([int(blocks[p // bs]) * bs + p % bs for p in range(n)])
    batch = ForwardBatch(torch.tensor(ids), torch.arange(n), slots, 0, torch.zeros(0, 1, dtype=torch.int32),
                         torch.zeros(0, dtype=torch.int32), [PrefillChunk(0, n, 0, blocks)])
    return decoder.forward(batch)


def greedy_reference(model, prompt: list[int], steps: int) -> tuple[list[int], list[float]]:
    """Full recompute, no cache: the training forward on the whole sequence at every step (fp32)."""
    ids, logprobs = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            lp = torch.log_softmax(model(torch.tensor([ids]))[0, -1].float(), dim=-1)
            nxt = int(lp[:VALID].argmax())
            ids.append(nxt)
            logprobs.append(float(lp[nxt]))
    return ids[len(prompt):], logprobs


def test_greedy_with_cache_equals_recompute_and_logprobs_match_training(tiny_export):
    uri, model = tiny_export
    loaded = load_engine(uri, "fp32", "cpu", max_batch_size=8)
    tok = loaded.tokenizer
    texts = ["def add(a, b):\n    return", "import os",
             "class Stack:\n    def __init__(self):\n        self.items = []\n",
             "// language: C++\n#include <vector>\nint main() {"]
    prompts = [tok.encode(t).ids for t in texts]
    assert len({len(p) for p in prompts}) == len(prompts)
    params = GenerationParams(max_tokens=12, temperature=0.0, logprobs=3, ignore_eos=True)
    first = {f"r{i}": (p, params) for i, p in enumerate(prompts[:2])}
    joins = {3: {"r2": (prompts[2], params)}, 7: {"r3": (prompts[3], params)}}  # join a running batch
    outs = collect(loaded.engine, first, joins)
    for i, prompt in enumerate(prompts):
        got = outs[f"r{i}"]
        want_ids, want_lps = greedy_reference(model, prompt, 12)
        assert tokens_of(got) == want_ids
        lps = [e for o in got for d in o.deltas for e in d.logprobs]
        assert [e.token for e in lps] == want_ids
        assert max(abs(e.logprob - w) for e, w in zip(lps, want_lps)) < 1e-4
        assert all(len(e.top) == 3 and e.top[0][1] >= e.top[1][1] >= e.top[2][1] for e in lps)
        assert all(abs(e.top[0][1] - e.logprob) < 1e-6 for e in lps)  # greedy picks the top token
        assert finish_of(got) == "length"
        assert got[-1].finished and got[-1].metrics.completion_tokens == 12


@pytest.mark.parametrize("max_tokens", [0, 1, 2])
def test_echo_prompt_logprobs_match_training(tiny_export, max_tokens):
    """Every request that asks for them gets its prompt's logprobs, whether it ends in the prompt's own step
    (max_tokens 0: scoring; 1: lm-eval's loglikelihood request, its sampled token ending it there) or later."""
    uri, model = tiny_export
    loaded = load_engine(uri, "fp32", "cpu", max_batch_size=4)
    prompt = loaded.tokenizer.encode("for i in range(10):\n    print(i)").ids
    outs = collect(loaded.engine, {"e": (prompt, GenerationParams(max_tokens=max_tokens, temperature=0, logprobs=2,
                                                                   prompt_logprobs=True))})
    with_prompt = [o.prompt_logprobs for o in outs["e"] if o.prompt_logprobs is not None]
    assert len(with_prompt) == 1, "the prompt's logprobs come once"
    plp = with_prompt[0]
    assert [e.token for e in plp] == prompt and plp[0].logprob is None
    assert len(tokens_of(outs["e"])) == max_tokens and outs["e"][-1].finished
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([prompt]))[0].float(), dim=-1)
    for i in range(1, len(prompt)):
        assert abs(plp[i].logprob - float(ref[i - 1, prompt[i]])) < 1e-4
        assert plp[i].top[0][0] == int(ref[i - 1, :VALID].argmax())


def test_same_seed_same_output_whatever_the_batch(tiny_export):
    uri, _ = tiny_export
    loaded = load_engine(uri, "fp32", "cpu", max_batch_size=8)
    prompt = loaded.tokenizer.encode("def quicksort(xs):").ids
    p = GenerationParams(max_tokens=10, temperature=0.9, top_p=0.95, top_k=50, seed=1234, ignore_eos=True)
    alone = tokens_of(collect(loaded.engine, {"a": (prompt, p)})["a"])
    again = tokens_of(collect(loaded.engine, {"a": (prompt, p)})["a"])
    other = GenerationParams(max_tokens=6, temperature=1.3, seed=7, ignore_eos=True)
    crowded = collect(loaded.engine, {"x": (prompt[:2], other), "a": (prompt, p), "y": (prompt[1:], other)},
                      joins={2: {"z": (prompt, other)}})
    assert alone == again == tokens_of(crowded["a"])
    different = tokens_of(collect(loaded.engine, {"a": (prompt, GenerationParams(
        max_tokens=10, temperature=0.9, top_p=0.95, top_k=50, seed=4321, ignore_eos=True))})["a"])
    assert different != alone


def test_n_samples_share_one_prefill(tiny_export):
    uri, _ = tiny_export
    loaded = load_engine(uri, "fp32", "cpu", max_batch_size=8)
    prompt = loaded.tokenizer.encode("public static void main(String[] args) {").ids
    p = GenerationParams(max_tokens=8, temperature=1.0, n=4, seed=99, ignore_eos=True)
    outs = collect(loaded.engine, {"n": (prompt, p)})["n"]
    samples = [tokens_of(outs, i) for i in range(4)]
    assert all(len(s) == 8 for s in samples) and len({tuple(s) for s in samples}) == 4
    assert samples == [tokens_of(collect(loaded.engine, {"n": (prompt, p)})["n"], i) for i in range(4)]
    # n greedy samples from one prefill are all the greedy continuation
    g = collect(loaded.engine, {"g": (prompt, GenerationParams(max_tokens=5, temperature=0, n=3, ignore_eos=True))})
    assert tokens_of(g["g"], 0) == tokens_of(g["g"], 1) == tokens_of(g["g"], 2)


def test_stop_strings_max_tokens_and_streamed_text(tiny_export):
    uri, _ = tiny_export
    loaded = load_engine(uri, "fp32", "cpu", max_batch_size=4)
    tok = loaded.tokenizer
    prompt = tok.encode("x = [1, 2, 3]\nfor").ids
    free = collect(loaded.engine, {"f": (prompt, GenerationParams(max_tokens=20, temperature=0, ignore_eos=True))})
    full = text_of(free["f"])
    assert full == tok.decode(tokens_of(free["f"])) and len(tokens_of(free["f"])) == 20
    assert finish_of(free["f"]) == "length"
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), full
    cut = collect(loaded.engine, {"s": (prompt, GenerationParams(max_tokens=20, temperature=0, stop=(stop, "\x00"),
                                                                  ignore_eos=True))})["s"]
    assert text_of(cut) == full[:full.index(stop)]
    assert finish_of(cut) == "stop"
    assert len(tokens_of(cut)) < 20


def test_context_limit_and_queue_bound(tiny_export):
    uri, _ = tiny_export
    loaded = load_engine(uri, "fp32", "cpu", max_batch_size=2, context_length=64, max_queue=1)
    engine = loaded.engine
    prompt = list(range(100, 140))
    with pytest.raises(ValueError, match="context length 64"):
        engine.add_request("too-long", prompt, GenerationParams(max_tokens=25), lambda o: None)
    outs = collect(engine, {"fits": (prompt, GenerationParams(max_tokens=24, temperature=0, ignore_eos=True))})
    assert len(tokens_of(outs["fits"])) == 24 and finish_of(outs["fits"]) == "length"
    engine.add_request("q1", prompt[:4], GenerationParams(max_tokens=2), lambda o: None)
    with pytest.raises(QueueFull):
        engine.add_request("q2", prompt[:4], GenerationParams(max_tokens=2), lambda o: None)
    engine.abort("q1")
    engine.run_until_done()
    assert not engine.has_work() and engine.num_running == 0


def test_beam_search_equals_exhaustive_search():
    """A tiny model with a 128-token vocabulary: with as many beams as tokens, two steps of beam search must
    find the best of all 128² continuations (scored by the training forward)."""
    cfg = ModelConfig(num_layers=2, hidden_size=32, num_heads=4, ffn_hidden_size=128, vocab_size=128,
                      max_seq_length=64)
    model = random_model(cfg, seed=5, init_std=0.3)
    vocab = cfg.vocab_size
    decoder = Decoder(cfg, model.state_dict(), "cpu", torch.float32)
    engine = Engine(decoder, None, eos_id=None, num_blocks=2 * vocab + 8, block_size=16, max_num_seqs=vocab,
                    max_batched_tokens=4 * vocab)
    prompt = [5, 17, 99]
    outs = collect(engine, {"b": (prompt, GenerationParams(max_tokens=2, num_beams=vocab, n=3))})["b"]
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([prompt]))[0, -1], dim=-1)
        seqs = torch.tensor([prompt + [t] for t in range(vocab)])
        second = torch.log_softmax(model(seqs)[:, -1], dim=-1)
    scores = first[:, None] + second  # [t1, t2]
    ranked = sorted(itertools.product(range(vocab), range(vocab)), key=lambda ab: -float(scores[ab]))
    assert [tokens_of(outs, i) for i in range(3)] == [list(ab) for ab in ranked[:3]]
    # the engine's greedy search on the same model is the recomputed greedy continuation
    greedy = collect(engine, {"g": (prompt, GenerationParams(max_tokens=4, temperature=0))})["g"]
    assert tokens_of(greedy) == greedy_tokens(model, prompt, 4, vocab)


def greedy_tokens(model, prompt, steps, vocab):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1, :vocab].argmax()))
    return ids[len(prompt):]


def test_int8_logits_close_to_unquantised_and_memory_saved(tiny_export):
    cfg = ModelConfig(num_layers=3, hidden_size=256, num_heads=4, ffn_hidden_size=1024)
    model = random_model(cfg, seed=11)
    state = model.state_dict()
    full = Decoder(cfg, state, "cpu", torch.float32)
    int8 = Decoder(cfg, state, "cpu", torch.float32, int8=True)
    from codemill.tokenize.tokenizer import codegeex_tokenizer

    tok = codegeex_tokenizer()
    records = humaneval.read_records(humaneval.language_file("python"))[:4] + \
        humaneval.read_records(humaneval.language_file("cpp"))[:4]
    for r in records:
        ids = tok.encode(r["prompt"]).ids[:256]
        a, b = prompt_logits(full, ids), prompt_logits(int8, ids)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        assert float(cos.min()) >= 0.99, (r["task_id"], float(cos.min()))
    linear_elems = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embedding" not in n)
    saved = full.weight_bytes() - int8.weight_bytes()
    assert saved >= 0.99 * 3 * linear_elems  # 4 bytes -> 1 per weight, less one scale per row


def test_compiled_decode_regions_match_eager(tiny_export):
    """The torch.compile'd block regions give the eager forward's outputs, through prefill and decode."""
    uri, _ = tiny_export
    prompt = list(range(300, 340))
    params = GenerationParams(max_tokens=8, temperature=0, logprobs=2, ignore_eos=True)
    got = []
    for compiled in (False, True):
        loaded = load_engine(uri, "fp32", "cpu", max_batch_size=4, compile=compiled)
        outs = collect(loaded.engine, {"r": (prompt, params), "s": (prompt[:7], params)})
        got.append({rid: [(e.token, round(e.logprob, 4)) for o in v for d in o.deltas for e in d.logprobs]
                    for rid, v in outs.items()})
    assert got[0] == got[1]


def test_loads_an_export_from_s3(s3_bucket, tiny_export):
    """The same export written to S3 (the moto server) loads and generates what the local one does."""
    uri, model = tiny_export
    remote = f"{s3_bucket}/run/train/export"
    write_random_export(remote, PRESETS["tiny"], model=model)
    prompt = [50, 60, 70]
    params = GenerationParams(max_tokens=6, temperature=0, ignore_eos=True)
    got = [tokens_of(collect(load_engine(u, "fp32", "cpu", max_batch_size=2).engine, {"r": (prompt, params)})["r"])
           for u in (uri, remote)]
    assert got[0] == got[1] and len(got[0]) == 6
    # the train stage's output (what a DAG passes on) finds its export/ folder
    from_train = load_engine(f"{s3_bucket}/run/train", "fp32", "cpu", max_batch_size=2).engine
    assert tokens_of(collect(from_train, {"r": (prompt, params)})["r"]) == got[0]
    with pytest.raises(FileNotFoundError):
        load_engine(f"{s3_bucket}/nothing-here", "fp32", "cpu")


def test_overlapped_steps_change_no_output(tiny_export):
    """Step N+1 launched before step N is read (the default), or each step read at once: the same outputs,
    through sequences ending, joining, stopping, sampling, n > 1, penalties and beams."""
    uri, _ = tiny_export
    tok = load_engine(uri, "fp32", "cpu", max_batch_size=8).tokenizer
    prompts = [tok.encode(t).ids for t in ("def add(a, b):", "int main() {", "import os\nfor", "x = [")]
    greedy = [GenerationParams(max_tokens=m, temperature=0, ignore_eos=True) for m in (30, 5, 20, 16)]
    free = collect(load_engine(uri, "fp32", "cpu", max_batch_size=8).engine, {"s": (prompts[0], greedy[3])})["s"]
    stop = text_of(free)[8:11]
    requests = {"a": (prompts[0], greedy[0]), "b": (prompts[1], greedy[1])}
    joins = {3: {"c": (prompts[2], greedy[2]),
                 "n": (prompts[1], GenerationParams(max_tokens=9, temperature=1.0, n=3, seed=4, ignore_eos=True))},
             4: {"s": (prompts[0], GenerationParams(max_tokens=16, temperature=0, stop=(stop,), ignore_eos=True))},
             6: {"p": (prompts[3], GenerationParams(max_tokens=10, temperature=0, frequency_penalty=1.5,
                                                    logit_bias=((5, 3.0),), ignore_eos=True))},
             8: {"beam": (prompts[2], GenerationParams(max_tokens=6, num_beams=3, n=2))},
             20: {"d": (prompts[3], GenerationParams(max_tokens=6, temperature=0.8, seed=5, ignore_eos=True))}}
    results = []
    for overlap in (False, True):
        engine = load_engine(uri, "fp32", "cpu", max_batch_size=8, overlap=overlap).engine
        outs = collect(engine, requests, joins)
        results.append({rid: [(tokens_of(o, i), text_of(o, i), finish_of(o, i)) for i in range(3 if rid == "n" else 1)]
                        for rid, o in outs.items()})
    assert results[0] == results[1]
    assert results[1]["s"][0][1] == text_of(free)[:8] and results[1]["s"][0][2] == "stop"


def test_preemption_and_chunked_prefill_change_no_output(tiny_export):
    """A KV cache too small for every request at once (requests are preempted and recomputed) and a step budget
    smaller than a prompt (prompts prefilled in chunks beside the decodes): the outputs of a roomy engine."""
    uri, _ = tiny_export
    prompts = [list(range(100 + 7 * i, 100 + 7 * i + 20 + 9 * i)) for i in range(6)]
    params = [GenerationParams(max_tokens=30, temperature=0, ignore_eos=True, logprobs=1),
              GenerationParams(max_tokens=24, temperature=0.9, seed=11, n=2, ignore_eos=True)]
    requests = {f"r{i}": (p, params[i % 2]) for i, p in enumerate(prompts)}
    roomy = load_engine(uri, "fp32", "cpu", max_batch_size=16)
    want = collect(roomy.engine, requests)
    steps = []
    # Room for the largest request alone (r5: 12 blocks of 8 positions for each of its 2 samples, which a
    # preempted request recomputes each on its own blocks), far from all six at once (83 blocks).
    tight = load_engine(uri, "fp32", "cpu", max_batch_size=16, max_batched_tokens=24, block_size=8,
                        kv_cache_bytes_explicit=26 * 8 * 1024, on_step=steps.append)
    assert tight.engine.blocks.num_blocks == 26
    got = collect(tight.engine, requests)
    for rid in requests:
        n = requests[rid][1].n
        assert [tokens_of(got[rid], i) for i in range(n)] == [tokens_of(want[rid], i) for i in range(n)], rid
        assert [e.logprob for o in got[rid] for d in o.deltas for e in d.logprobs] == pytest.approx(
            [e.logprob for o in want[rid] for d in o.deltas for e in d.logprobs], abs=1e-5)
    assert tight.engine.scheduler.preemptions > 0
    assert all(s.batch_size + s.prefill_tokens <= 24 for s in steps)
    assert any(s.batch_size and s.prefill_tokens for s in steps)  # prompt chunks rode along with decodes
    assert tight.engine.blocks.num_free == 25  # every block back but the reserved one


def test_n_samples_share_the_prompt_blocks(tiny_export):
    uri, _ = tiny_export
    engine = load_engine(uri, "fp32", "cpu", max_batch_size=8, block_size=8).engine
    prompt = list(range(500, 580))  # 10 blocks
    engine.add_request("n", prompt, GenerationParams(max_tokens=4, temperature=1.0, n=4, seed=1), lambda o: None)
    free = engine.blocks.num_free
    engine.step()  # the prompt's prefill; the 4 samples fork its table
    assert free - engine.blocks.num_free == 10  # the prompt's blocks, once for all four samples
    engine.step()  # each sample writes its first token into a block of its own
    assert free - engine.blocks.num_free == 14
    engine.run_until_done()
    assert engine.blocks.num_free == free


def test_a_failing_request_fails_alone(tiny_export, monkeypatch):
    """A step that raises because of one request (here: its prompt holds a poisoned token) fails that request
    only; the others, in the same steps, end as they would alone."""
    uri, _ = tiny_export
    engine = load_engine(uri, "fp32", "cpu", max_batch_size=8).engine
    poison = 4242
    forward = engine.decoder.forward

    def guarded(batch):
        if bool((batch.input_ids == poison).any()):
            raise RuntimeError("poisoned token")
        return forward(batch)

    monkeypatch.setattr(engine.decoder, "forward", guarded)
    params = GenerationParams(max_tokens=12, temperature=0, ignore_eos=True)
    good = {f"g{i}": (list(range(200 + i, 230 + i)), params) for i in range(3)}
    outs = collect(engine, {**good, "bad": ([1, 2, poison, 3], params)}, joins={2: {"late": ([7, 8, 9], params)}})
    assert outs["bad"][-1].error and outs["bad"][-1].finished
    ref = collect(load_engine(uri, "fp32", "cpu", max_batch_size=8).engine, {**good, "late": ([7, 8, 9], params)})
    for rid in [*good, "late"]:
        assert tokens_of(outs[rid]) == tokens_of(ref[rid]) and not outs[rid][-1].error, rid
    assert engine.failed_steps >= 1 and engine.blocks.num_free == engine.blocks.num_blocks - 1
