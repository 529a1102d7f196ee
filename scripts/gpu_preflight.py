"""What the device check needs, and what a pytest run of it proved (stdlib only: it must start anywhere).

python3 scripts/gpu_preflight.py [--out preflight.json]   versions, CUDA, what is missing; exit 1 if unusable
python3 scripts/gpu_preflight.py --junit gpu-tests.xml    exit 1 unless some test ran and none failed
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

# (import name, needed for): the trainer path needs all of these; vllm is reported, never required here
NEEDED = [
    ("torch", "everything"),
    ("transformers", "models"),
    ("peft", "LoRA"),
    ("accelerate", "launch"),
    ("safetensors", "adapters"),
    ("pydantic", "rltrain.config (carry it as a wheel: scripts/gpu_wheels.sh)"),
    ("pytest", "the gpu tests"),
    ("tqdm", "progress"),
]
OPTIONAL = [
    ("vllm", "vLLM rollouts (absent on the device image: hf backend only)"),
    ("jsonschema", "record checks"),
]


def _version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001  (any import failure means: not usable here)
        return None
    return str(getattr(module, "__version__", "?"))


def preflight() -> tuple[dict[str, Any], list[str]]:
    report: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    problems = []
    for name, why in NEEDED + OPTIONAL:
        version = _version(name)
        report[name] = version
        if version is None and (name, why) in NEEDED:
            problems.append(f"missing {name} (needed for {why})")
    if report["torch"] is not None:
        import torch

        report["cuda_available"] = torch.cuda.is_available()
        report["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            report["device"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
            report["bf16"] = torch.cuda.is_bf16_supported()
        else:
            problems.append("no CUDA: torch sees no GPU (this check proves nothing on CPU)")
    return report, problems


def junit_verdict(path: Path) -> tuple[bool, str]:
    """True when at least one test passed and none failed or errored."""
    if not path.is_file():
        return False, f"{path}: no report (pytest did not run)"
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    assert suite is not None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ok = passed > 0 and counts["failures"] == counts["errors"] == 0
    failed = counts["failures"] + counts["errors"]
    return ok, f"gpu tests: {passed} passed, {counts['skipped']} skipped, {failed} failed or errored"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--junit", type=Path, help="judge a pytest junit report instead")
    args = p.parse_args(argv)
    if args.junit:
        ok, line = junit_verdict(args.junit)
        print(line + ("" if ok else "  -> FAILED (nothing ran, or something failed)"))
        return 0 if ok else 1
    report, problems = preflight()
    report["problems"] = problems
    for key, value in report.items():
        if key != "problems":
            print(f"{key:18} {value if value is not None else 'MISSING'}")
    for line in problems:
        print(f"preflight: {line}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
