"""The README's hand-run walkthrough works as written: pasted into bash, it gets a 202."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running the gateway by hand", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "the section has no sh block"
    return match.group(1)


def test_readme_walkthrough_answers_202(kafka_bootstrap: str) -> None:
    script = walkthrough()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    env.pop("CRYSTALLIZE_SIGNATURE_SECRET", None)
    res = subprocess.run(
        ["bash", "-e", "-c", script + "\nwait\n"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "HTTP/1.1 202 Accepted" in res.stdout, out[-3000:]
    assert re.search(r'"id":"[0-9a-f]{64}"', res.stdout), out[-3000:]
    assert 'webhookgw_ingress_requests_total{source="crystallize",status="202"} 1.0' in res.stdout
    assert "dev-secret-change-me" not in res.stderr  # the secret is not logged
