#!/usr/bin/env bash
# The wheels the lent GPU machine lacks (Ray with its dashboard and Serve deps, DeepSpeed), in .whl/, slimmed to
# fit beside the working tree: a device call carries at most 64 MiB, tree and wheels together. Ray's wheel loses
# its dashboard's JavaScript source maps (1.5 MB compressed; only a browser's developer tools read them), RLlib
# (1.6 MB; Tune imports it only inside a guarded `try`) and ray.llm (0.3 MB; only ray.serve.llm and ray.data.llm
# import it, and codemill uses neither).
# Use, from the repository root: bash benchmarks/lent_gpu/prepare_wheels.sh   (then carry [".whl"])
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || grep -qx '.whl/' .gitignore || echo /.whl/ >> .git/info/exclude
[ -n "$(ls .whl/ray-*.whl 2>/dev/null)" ] || bash ../shared/device/wheelhouse.sh serve .whl
python3 - .whl <<'PY'
import pathlib, sys, zipfile
def dropped(name):
    return name.endswith(".js.map") or name.startswith(("ray/rllib/", "ray/llm/"))
for whl in pathlib.Path(sys.argv[1]).glob("ray-*.whl"):
    with zipfile.ZipFile(whl) as src:
        if not any(dropped(i.filename) for i in src.infolist()):
            continue
        out = whl.with_suffix(".slim")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if dropped(info.filename):
                    continue
                data = src.read(info.filename)
                if info.filename.endswith(".dist-info/RECORD"):
                    data = b"\n".join(l for l in data.split(b"\n") if not dropped(l.split(b",")[0].decode()))
                dst.writestr(info, data)
    out.replace(whl)
PY
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb | tail -1 | cut -f1)
wheels=$(du -sb .whl | cut -f1)
total=$(( tree + ${untracked:-0} + wheels ))
limit=$(( 64 * 1024 * 1024 ))
echo "working tree $tree + untracked ${untracked:-0} + wheels $wheels = $total bytes of $limit"
[ "$total" -le "$limit" ] || { echo "over the 64 MiB a device call carries: ignore or move files" >&2; exit 1; }
