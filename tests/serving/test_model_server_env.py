"""A model server started as a pod's container is: the version and artifact from the pod template's environment.

mape points a Kubernetes Deployment at a version by setting
``MAPE_MODEL_VERSION`` and ``MAPE_ARTIFACT_URI`` on its pod template
(:mod:`mape.serving.pod_template`); a container running the model server
without ``--artifact`` and ``--version`` serves that version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from mape.serving.pod_template import ARTIFACT_ENV, VERSION_ENV
from tests.serving.test_model_server import call, free_port


def test_the_version_and_artifact_come_from_the_environment_when_not_given(artifact_uri: str) -> None:
    port = free_port()
    env = {**os.environ, ARTIFACT_ENV: artifact_uri, VERSION_ENV: "12"}
    process = subprocess.Popen([sys.executable, "-m", "mape.serving.model_server", "--port", str(port),
                                "--model", "credit"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line == f"serving credit v12 on http://127.0.0.1:{port}\n", process.stderr and process.stderr.read()
        status, body = call(f"http://127.0.0.1:{port}/health")
        assert status == 200 and json.loads(body)["version"] == 12
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)


def test_without_the_environment_the_version_and_artifact_are_required() -> None:
    env = {k: v for k, v in os.environ.items() if k not in (ARTIFACT_ENV, VERSION_ENV)}
    done = subprocess.run([sys.executable, "-m", "mape.serving.model_server", "--port", "1", "--model", "credit"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--artifact" in done.stderr and "--version" in done.stderr
