"""`[[env]] openenv = {...}`: the config of an OpenEnv environment (rltrain/kinds/openenv.py), one table
inside an `[[env]]` entry; its own module to keep config_sections.py short."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OpenEnvConfig(BaseModel):
    """`[[env]] openenv = {...}`: an OpenEnv server; an episode is one session (reset, a step per reply)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    url: str | None = Field(None, examples=["http://127.0.0.1:8000"])
    """A running server's base URL."""
    path: str | None = Field(None, examples=["my_env"])
    """Or the environment's folder (openenv init's layout): the run serves it with uvicorn on 127.0.0.1."""
    python: str | None = Field(None, examples=["~/.cache/rltrain/venvs/my-server-1a2b/bin/python"])
    """The interpreter of the server's venv (with `path`)."""
    app: str | None = Field(None, examples=["server.app:app"])
    """The ASGI app to serve (with `path`; default: openenv.yaml's `app`)."""
    rows: int = Field(16, gt=0)
    """Rows: one reset each, seeds seed, seed+1, ...; the prompt is the real first observation."""
    seed: int = 0
    """The first row's reset seed."""
    reset: dict[str, Any] = Field(default_factory=dict)
    """More keyword arguments for every reset."""
    reward: Literal["sum", "last"] = "sum"
    """An episode's reward: the sum of its step rewards, or the last one."""
    max_turns: int = Field(8, gt=0)
    """Replies per episode at most (caps environments that never say done)."""
    max_concurrent: int | None = Field(None, gt=0, examples=[4])
    """Sessions at once (unset: as many as the server accepts, found at start, up to 64)."""
    timeout_s: float = Field(60.0, gt=0.0)
    """Seconds one reset or step may take."""

    @model_validator(mode="after")
    def _url_or_path(self) -> OpenEnvConfig:
        if (self.url is None) == (self.path is None):
            raise ValueError("openenv needs a url (a running server) or a path (its folder), not both")
        if self.path is not None and self.python is None:
            raise ValueError("openenv path needs python: the interpreter of the server's venv")
        if self.url is not None and (self.python or self.app):
            raise ValueError("openenv python and app go with path: a server at a url runs on its own")
        return self

    @property
    def label(self) -> str:
        """The environment's name by default: the folder's name, or the server's host:port."""
        if self.path is not None:
            return Path(self.path).name
        return urlparse(str(self.url)).netloc or str(self.url)
