"""The dashboard in a real headless browser (Debian's chromium, driven by selenium) while a run trains:
log in, see the table update, open the run, read a rollout, cancel the run; a screenshot is kept as a
test artifact ($RLTRAIN_TEST_ARTIFACTS, default test-artifacts/)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import KEY, Live, fake_run

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or DRIVER is None) and not os.environ.get("CI"),  # in CI a missing browser fails
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
CONFIG = """model = "builtin:tiny"
max_steps = 400
batch_size = 8
rollouts_per_example = 4
learning_rate = 1e-2
max_async_level = 0
[sampling]
max_tokens = 8
[[env]]
id = "digits"
[rollout]
backend = "hf"
[run]
id = "watched"
output_dir = "runs"
progress = false
tensorboard = false
"""


def driver(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--window-size=1400,1100",
                 f"--user-data-dir={profile}"):  # fmt: skip
        opts.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not look for a driver online
    return webdriver.Chrome(options=opts, service=Service(executable_path=str(DRIVER)))


@pytest.fixture
def training(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "c.toml").write_text(CONFIG)
    cmd = [sys.executable, "-m", "rltrain", "--config", "c.toml"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield tmp_path / "runs"
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture
def serve(training: Path) -> Iterator[str]:
    env = {**os.environ, "RLTRAIN_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rltrain", "serve", "--port", "0", "--runs", str(training)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "rltrain serve: http://127.0.0.1:PORT/ (...)"
    assert first.startswith("rltrain serve: http://127.0.0.1:"), first
    yield first.split()[2]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_dashboard_watches_a_training_run_and_cancels_it(serve: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = driver(tmp_path / "profile")
    wait = WebDriverWait(browser, 240, poll_frequency=0.3)
    artifacts = Path(os.environ.get("RLTRAIN_TEST_ARTIFACTS") or REPO / "test-artifacts")
    try:
        browser.get(serve)
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.ID, "login").click()
        row = 'tr[data-id="watched"]'
        step = lambda: browser.find_element(By.CSS_SELECTOR, f"{row} .step").text  # noqa: E731
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, row) and int(step().split("/")[0]) >= 1)
        seen = step()
        wait.until(lambda b: step() != seen)  # the table follows the run without a reload
        assert "RUNNING" in browser.find_element(By.CSS_SELECTOR, row).text
        browser.find_element(By.CSS_SELECTOR, row).click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".rollout .msg.assistant"))
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#charts canvas")) >= 2)
        steps = browser.execute_script("return state.rows.map((r) => r.step)")  # each step once, in order
        assert len(steps) >= 2 and steps == sorted(set(steps)), steps
        rollout = browser.find_elements(By.CSS_SELECTOR, ".rollout")[0]
        reward = float(rollout.find_element(By.CSS_SELECTOR, ".reward").text.removeprefix("reward "))
        assert 0.0 <= reward <= 1.0
        assert "digits" in rollout.find_element(By.CSS_SELECTOR, ".msg.prompt").text.lower() or rollout.text
        assert browser.find_element(By.ID, "run-status").text == "RUNNING"
        artifacts.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(artifacts / "dashboard-run.png"))
        browser.find_element(By.ID, "cancel").click()
        wait.until(lambda b: b.find_element(By.ID, "run-status").text == "STOPPED")
        browser.save_screenshot(str(artifacts / "dashboard-cancelled.png"))
    finally:
        browser.quit()
    assert (artifacts / "dashboard-cancelled.png").stat().st_size > 10_000


def test_tool_calls_and_environment_messages_are_shown_apart_and_as_text(live: Live, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir = fake_run(live.root, "tools", "succeeded", steps=1)
    call = {"type": "function", "id": "c1", "function": {"name": "add", "arguments": '{"a": 2}'}}
    turns = [
        {"role": "assistant", "content": "<img src=x onerror=alert(1)>", "tool_calls": [call]},
        {"role": "tool", "name": "add", "content": "4"},
        {"role": "user", "content": "higher"},
        {"role": "assistant", "content": "done"},
    ]  # fmt: skip
    record = {"group": 0, "env": "calc", "prompt": [{"role": "user", "content": "add 2"}],
              "completion": "done", "reward": 1.0, "advantage": 0.5, "finish": "stop", "turns": 2,
              "tool_calls": 1, "messages": turns}  # fmt: skip
    (run_dir / "rollouts" / "step_1.jsonl").write_text(json.dumps(record) + "\n")
    browser = driver(tmp_path / "profile")
    try:
        browser.get(f"http://127.0.0.1:{live.port}/")
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.ID, "login").click()
        # logged in (the session cookie set) before moving on: navigating at once aborted the login
        WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-id="tools"]'))
        browser.get(f"http://127.0.0.1:{live.port}/#/run/tools")
        WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".rollout .msg.tool"))
        text = {kind: [e.text for e in browser.find_elements(By.CSS_SELECTOR, f".rollout .msg.{kind}")]
                for kind in ("prompt", "assistant", "tool-call", "tool", "env")}  # fmt: skip
    finally:
        browser.quit()
    assert text["prompt"] == ["USER\nadd 2"] and text["assistant"][1] == "ASSISTANT\ndone"
    assert text["assistant"][0] == "ASSISTANT\n<img src=x onerror=alert(1)>"  # shown, never markup
    assert text["tool-call"] == ['TOOL CALL · ADD\n{"a": 2}'] and text["tool"] == ["TOOL RESULT · ADD\n4"]
    assert text["env"] == ["ENVIRONMENT (USER)\nhigher"]
