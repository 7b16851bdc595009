"""No code an engine step runs copies host values to the device in a way that waits for the device.

`torch.tensor(values, device=...)` and a blocking `.to(device)` synchronise the CUDA stream: the host then waits
for the forward pass (or the whole step in flight) before it goes on, so the engine's host work no longer overlaps
the device's. This CPU machine cannot see the stall (a CPU copy waits for nothing), so the rule is read from the
source: every such copy in the step's modules goes through `codemill.serve.transfer.to_device` or says
`non_blocking=True`. Loading and CUDA-graph capture, which run once, may wait."""

from __future__ import annotations

import ast
from pathlib import Path

SERVE = Path(__file__).resolve().parents[2] / "codemill" / "serve"
STEP_MODULES = ["engine.py", "scheduler.py", "block_manager.py", "model_runner.py", "decoder.py", "attention.py",
                "fused.py", "sampling.py", "beam.py", "detok.py", "sequence.py"]
ONCE = {"__init__", "allocate_cache", "capture"}  # load time: may wait


def _is_dtype(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "dtype" or (isinstance(node.value, ast.Name) and node.value.id in ("torch", "tl")
                                         and not node.attr.startswith("device"))
    return isinstance(node, ast.Name) and "dtype" in node.id


def _waits(call: ast.Call) -> bool:
    func = call.func
    keywords = {k.arg: k.value for k in call.keywords}
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch" \
            and func.attr == "tensor":
        return "device" in keywords
    if isinstance(func, ast.Attribute) and func.attr in ("to", "cuda"):
        to_device = func.attr == "cuda" or "device" in keywords or (call.args and not _is_dtype(call.args[0]))
        non_blocking = keywords.get("non_blocking")
        return bool(to_device) and not (isinstance(non_blocking, ast.Constant) and non_blocking.value is True)
    return False


def _kernel(fn: ast.FunctionDef) -> bool:  # Triton kernels run on the device: their .to() is a dtype cast
    return any(isinstance(d, ast.Attribute) and d.attr == "jit" for d in fn.decorator_list)


def blocking_copies(source: str, name: str) -> list[str]:
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef) or fn.name in ONCE or _kernel(fn):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and _waits(node):
                found.append(f"{name}:{node.lineno} in {fn.name}: {ast.unparse(node)[:80]}")
    return sorted(set(found))


def test_the_step_never_waits_for_the_device_to_copy_host_values():
    found = [f for m in STEP_MODULES for f in blocking_copies((SERVE / m).read_text(), m)]
    assert not found, "host-to-device copies that synchronise the stream (use transfer.to_device):\n" + \
        "\n".join(found)


def test_the_rule_sees_the_copies_that_wait():
    waiting = '''
def f(values, device, t):
    a = torch.tensor(values, dtype=torch.long, device=device)
    b = t.to(device)
    c = t.cuda()
    d = t.to(device=device, dtype=torch.float32)
'''
    fine = '''
def g(values, device, t, x):
    a = torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)
    b = t.to(torch.float32)
    c = t.to(x.dtype)
    d = torch.tensor(values)
'''
    assert len(blocking_copies(waiting, "w")) == 4
    assert blocking_copies(fine, "f") == []
