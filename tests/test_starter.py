"""The config's field docs are the one source: `init`'s starter and the README table agree with them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel

from rltrain.config import HOSTED_ONLY_KEYS, Config, parse_config
from rltrain.starter import config_table, starter_config
from scripts.update_config_docs import readme_with_table

REPO = Path(__file__).resolve().parents[1]


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    from rltrain.starter import _model_of

    found = [model]
    for info in model.model_fields.values():
        sub, _ = _model_of(info)
        if sub is not None:
            found += _models(sub)
    return found


def test_every_field_is_documented() -> None:
    missing = [
        f"{m.__name__}.{k}" for m in _models(Config) for k, i in m.model_fields.items() if not i.description
    ]
    assert not missing, f"fields without a docstring: {missing}"


def test_starter_is_a_valid_config_and_names_every_key() -> None:
    text = starter_config()
    cfg = parse_config(tomllib.loads(text))
    assert cfg.model == "builtin:tiny" and cfg.env[0].id == "digits"
    table = config_table()
    for model in _models(Config):
        for key, info in model.model_fields.items():
            # hosted-only and deprecated keys are accepted but never suggested
            assert f"{key} " in text or f"{key}]" in text or key in (*HOSTED_ONLY_KEYS, "eval_base_model"), (
                key
            )
            assert info.description and " ".join(info.description.split()).replace("|", "\\|") in table
    # uncommenting every key still gives a valid config: the commented defaults are real values
    uncommented = "\n".join(
        line.removeprefix("# ") for line in text.splitlines() if not line.startswith("# rltrain")
    )
    data = tomllib.loads(uncommented.replace("Every key is checked", "# Every key is checked"))
    # an [[env]] is of one kind: the keys only another kind takes are checked in entries of their own
    for entries in (data["env"], data["eval"]["env"]):
        server, python = entries[0].pop("openenv"), entries[0].pop("python")
        entries += [{"id": "x", "python": python}, {"openenv": {**server, "url": None}}]
    assert parse_config(data).checkpoints.keep_last == 3


def test_readme_table_is_generated_from_the_fields() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme == readme_with_table(readme), (
        "README config table is stale: run scripts/update_config_docs.py"
    )
