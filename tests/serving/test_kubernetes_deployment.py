"""KubernetesDeployment scales a Deployment through the official client, against a recorded API server on loopback.

No cluster runs here: :mod:`tests.serving.fake_apiserver` answers the
requests the real ``kubernetes`` client sends with the recorded documents of
``k8s_recorded/``, and keeps the replica count, so these tests exercise the
client's own request building, authentication and error handling.
"""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mape.config import ModelConfig, ServingConfig, settings_from_mapping
from mape.errors import ConfigError, ServingError
from mape.serving import KubernetesDeployment, ServingTarget
from mape.serving.factory import target_for
from tests.serving.fake_apiserver import RecordedApiServer, recorded

pytest.importorskip("kubernetes")

SCALE_PATH = "/apis/apps/v1/namespaces/ml/deployments/ranker/scale"
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/ml/deployments/ranker"
TOKEN_ENV = "MAPE_TEST_K8S_TOKEN"


def deployment(server: RecordedApiServer, name: str = "ranker", **kwargs: Any) -> KubernetesDeployment:
    options: dict[str, Any] = {"api_server": server.url, "token_env": TOKEN_ENV, "request_timeout": 5.0, **kwargs}
    return KubernetesDeployment("ranker", "ml", name, **options)


def patches(server: RecordedApiServer) -> list[Any]:
    return [r for r in server.requests if r.method == "PATCH"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------- scaling


def test_it_reads_patches_and_reports_the_deployment_through_the_real_client(apiserver):
    target = deployment(apiserver, endpoint="http://ranker.ml.svc:8080")
    assert isinstance(target, ServingTarget)
    assert target.replicas() == 2

    assert target.scale(3) == 3
    assert target.replicas() == 3  # the patch changed what the next GET returns
    health = target.health()
    assert (health.replicas, health.ready, health.endpoints) == (3, 3, ["http://ranker.ml.svc:8080"])
    assert str(health) == "3 of 3 replicas ready"

    assert target.scale(1) == 1
    assert apiserver.deployments[("ml", "ranker")].replicas == 1


def test_the_patch_is_a_merge_patch_of_spec_replicas_with_the_bearer_token(apiserver):
    deployment(apiserver).scale(4)
    (patch,) = patches(apiserver)
    assert patch.path == SCALE_PATH
    assert patch.body == {"spec": {"replicas": 4}}
    # recorded from kubernetes 37.0.1: a dict body goes out as a strategic merge patch
    assert patch.headers["content-type"] == "application/strategic-merge-patch+json"
    assert patch.headers["authorization"] == f"Bearer {apiserver.token}"
    assert patch.headers["accept"].startswith("application/json")
    assert [(r.method, r.path) for r in apiserver.requests] == [("GET", SCALE_PATH), ("PATCH", SCALE_PATH)]


def test_the_recorded_server_refuses_a_patch_that_is_not_a_patch_type(apiserver):
    request = urllib.request.Request(f"{apiserver.url}{SCALE_PATH}", method="PATCH",
                                     data=json.dumps({"spec": {"replicas": 5}}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {apiserver.token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as failure:
        opener.open(request, timeout=5)
    assert failure.value.code == 415
    assert json.loads(failure.value.read())["reason"] == "UnsupportedMediaType"
    assert apiserver.deployments[("ml", "ranker")].replicas == 2


def test_scaling_to_the_current_count_sends_no_patch(apiserver):
    target = deployment(apiserver)
    assert target.scale(2) == 2
    assert target.scale(2) == 2
    assert patches(apiserver) == []
    target.scale(3)
    target.scale(3)
    assert len(patches(apiserver)) == 1


def test_zero_replicas_read_back_as_zero_although_the_api_server_omits_the_field(apiserver):
    target = deployment(apiserver)
    assert target.scale(0) == 0
    request = urllib.request.Request(f"{apiserver.url}{SCALE_PATH}",
                                     headers={"Authorization": f"Bearer {apiserver.token}"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5) as response:
        assert json.loads(response.read())["spec"] == {}
    assert target.replicas() == 0
    health = target.health()
    assert (health.replicas, health.ready, health.endpoints) == (0, 0, [])


def test_a_negative_count_is_refused_before_any_request(apiserver):
    with pytest.raises(ValueError, match="The 'n' parameter of KubernetesDeployment.scale must be an int >= 0"):
        deployment(apiserver).scale(-1)
    assert apiserver.requests == []


# ---------------------------------------------------------------------- health


def test_health_names_every_condition_that_is_not_well(apiserver):
    state = apiserver.deployments[("ml", "ranker")]
    state.replicas, state.ready, state.conditions = 3, 1, recorded("conditions-unavailable")
    health = deployment(apiserver, endpoint="http://ranker.ml.svc:8080").health()
    assert (health.replicas, health.ready, health.endpoints) == (3, 1, ["http://ranker.ml.svc:8080"])
    assert health.detail.startswith("1 of 3 replicas ready; ")
    assert "Available is False (MinimumReplicasUnavailable: Deployment does not have minimum availability.)" \
        in health.detail
    assert 'Progressing is False (ProgressDeadlineExceeded: ReplicaSet "ranker-7c9d8f6b5d" has timed out' \
        in health.detail
    assert "ReplicaFailure is True (FailedCreate: " in health.detail and "exceeded quota" in health.detail


def test_health_reports_no_endpoint_while_no_replica_is_ready_and_a_change_not_yet_acted_on(apiserver):
    state = apiserver.deployments[("ml", "ranker")]
    state.ready, state.generation, state.observed_generation = 0, 5, 4
    health = deployment(apiserver, endpoint="http://ranker.ml.svc:8080").health()
    assert (health.ready, health.endpoints) == (0, [])
    assert health.detail == ("0 of 2 replicas ready; the Deployment controller has not yet acted on the latest "
                             "change")


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(("status", "said", "transient"), [
    (401, "the API server at http://127.0.0.1", False),
    (403, 'User "system:serviceaccount:ml:mape" cannot patch resource "deployments/scale"', False),
    (404, 'deployments.apps "ranker" not found; check serving.kubernetes.namespace', False),
    (409, "the object has been modified", True),
    (422, "spec.replicas: Invalid value", False),
    (429, "the API server is throttling requests (retry after 1s)", True),
    (500, "Internal error occurred: etcdserver: request timed out; the API server failed", True),
    (503, "the server is currently unable to handle the request", True),
])
def test_each_error_answer_of_the_patch_becomes_a_serving_error_naming_the_deployment(apiserver, status, said,
                                                                                     transient):
    apiserver.fail(status, method="PATCH")
    with pytest.raises(ServingError) as failure:
        deployment(apiserver).scale(3)
    error = failure.value
    assert error.model == "ranker" and error.transient is transient
    assert str(error).startswith(f"serving model ranker: cannot scale Kubernetes deployment ml/ranker: HTTP {status} ")
    assert said in str(error)
    assert "Traceback" not in str(error) and "HTTP response headers" not in str(error)
    assert apiserver.deployments[("ml", "ranker")].replicas == 2


@pytest.mark.parametrize(("call", "verb", "resource"), [
    ("replicas", "read the scale of", "scale"),
    ("health", "read the status of", "deployment"),
])
def test_reads_fail_the_same_way(apiserver, call, verb, resource):
    apiserver.fail(503, method="GET", resource=resource)
    with pytest.raises(ServingError, match=f"cannot {verb} Kubernetes deployment ml/ranker: HTTP 503 "):
        getattr(deployment(apiserver), call)()


def test_a_wrong_token_is_refused_with_401_naming_the_variable(apiserver, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    with pytest.raises(ServingError) as failure:
        deployment(apiserver).scale(3)
    assert failure.value.transient is False
    assert str(failure.value) == (
        f"serving model ranker: cannot read the scale of Kubernetes deployment ml/ranker: HTTP 401 Unauthorized; "
        f"the API server at {apiserver.url} does not accept the token in {TOKEN_ENV} (wrong or expired?)")
    assert patches(apiserver) == []


def test_no_token_at_all_says_to_name_one(apiserver):
    target = KubernetesDeployment("ranker", "ml", "ranker", api_server=apiserver.url)
    with pytest.raises(ServingError, match="wants credentials: name the environment variable holding a token in "
                                           "serving.kubernetes.token_env"):
        target.replicas()


def test_an_unset_token_variable_fails_before_any_request(apiserver, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ServingError) as failure:
        deployment(apiserver).replicas()
    assert failure.value.transient is False
    assert f"the environment variable {TOKEN_ENV} (serving.kubernetes.token_env)" in str(failure.value)
    assert apiserver.requests == []


def test_an_unknown_deployment_is_a_404_naming_it(apiserver):
    with pytest.raises(ServingError) as failure:
        deployment(apiserver, name="ranker-v2").health()
    assert failure.value.transient is False
    assert 'Kubernetes deployment ml/ranker-v2: HTTP 404 Not Found: deployments.apps "ranker-v2" not found' \
        in str(failure.value)


def test_connection_refused_is_a_clear_transient_error(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = f"http://127.0.0.1:{closed_port()}"
    target = KubernetesDeployment("ranker", "ml", "ranker", api_server=url)
    with pytest.raises(ServingError) as failure:
        target.scale(3)
    assert failure.value.transient is True
    assert str(failure.value) == (f"serving model ranker: cannot read the scale of Kubernetes deployment ml/ranker: "
                                  f"cannot connect to the API server at {url}: connection refused")


def test_an_api_server_slower_than_the_request_timeout_is_a_transient_error(apiserver):
    apiserver.delay = 2.0
    with pytest.raises(ServingError) as failure:
        deployment(apiserver, request_timeout=0.3).replicas()
    assert failure.value.transient is True
    assert str(failure.value).endswith(f"the API server at {apiserver.url} did not answer within 0.3s")


def test_serving_errors_keep_transient_through_pickling():
    error = ServingError("HTTP 403", model="ranker", transient=False)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.transient, str(copy)) == (False, str(error))


# ---------------------------------------------------------------------- credentials


def _kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(f"""\
apiVersion: v1
kind: Config
clusters:
- name: loopback
  cluster:
    server: {server}
users:
- name: mape
  user:
    token: {token}
contexts:
- name: other
  context: {{cluster: loopback, user: nobody}}
- name: test
  context: {{cluster: loopback, user: mape, namespace: ml}}
current-context: other
""")
    return path


def test_a_kubeconfig_file_and_context_are_used(apiserver, tmp_path):
    assert apiserver.token is not None
    config = _kubeconfig(tmp_path / "kubeconfig", apiserver.url, apiserver.token)
    target = KubernetesDeployment("ranker", "ml", "ranker", kubeconfig=config, context="test")
    assert target.scale(3) == 3
    assert patches(apiserver)[0].headers["authorization"] == f"Bearer {apiserver.token}"


def test_an_unloadable_kubeconfig_is_a_permanent_error_naming_it(tmp_path):
    missing = tmp_path / "absent-kubeconfig"
    target = KubernetesDeployment("ranker", "ml", "ranker", kubeconfig=missing)
    with pytest.raises(ServingError) as failure:
        target.replicas()
    assert failure.value.transient is False
    assert f"cannot reach Kubernetes deployment ml/ranker: cannot load the kubeconfig {missing}" in str(failure.value)


def test_in_cluster_credentials_outside_a_cluster_are_a_permanent_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    target = KubernetesDeployment("ranker", "ml", "ranker", in_cluster=True)
    with pytest.raises(ServingError, match=r"cannot load the pod's service account \(serving.kubernetes.in_cluster\)"):
        target.health()


# ---------------------------------------------------------------------- configuration and factory


def _model(serving: dict[str, Any]) -> dict[str, Any]:
    source = {"kind": "parquet", "path": "/nonexistent"}
    return {"name": "ranker", "features": {"numeric": ["income"]}, "inference": source, "labels_source": source,
            "training": {"entrypoint": "examples.credit.model:train"}, "serving": serving}


def test_the_factory_builds_the_deployment_a_kubernetes_section_names(apiserver):
    cfg = ModelConfig.model_validate(_model({
        "target": "kubernetes", "replicas": {"min_replicas": 1, "max_replicas": 5},
        "kubernetes": {"namespace": "ml", "deployment": "ranker", "api_server": apiserver.url,
                       "token_env": TOKEN_ENV, "request_timeout": "3s", "endpoint": "http://ranker.ml.svc:8080"}}))
    target = target_for(cfg, Path("/nonexistent-serving-dir"))
    assert isinstance(target, KubernetesDeployment)
    assert (target.namespace, target.deployment, target.request_timeout) == ("ml", "ranker", 3.0)
    assert target.health().endpoints == ["http://ranker.ml.svc:8080"]


@pytest.mark.parametrize(("serving", "field", "message"), [
    ({"target": "kubernetes"}, "models[0].serving", "target kubernetes needs a kubernetes section"),
    ({"kubernetes": {"deployment": "ranker"}}, "models[0].serving", "but target is 'local'"),
    ({"target": "kubernetes", "kubernetes": {"deployment": "Ranker_1"}}, "models[0].serving.kubernetes.deployment",
     "should match pattern"),
    ({"target": "kubernetes", "kubernetes": {"deployment": "ranker", "in_cluster": True,
                                             "api_server": "https://10.0.0.1:6443"}},
     "models[0].serving.kubernetes", "in_cluster and api_server are two ways"),
    ({"target": "kubernetes", "kubernetes": {"deployment": "ranker", "token_env": "TOKEN"}},
     "models[0].serving.kubernetes", "token_env names the token for api_server"),
    ({"target": "kubernetes", "kubernetes": {"deployment": "ranker", "in_cluster": True, "context": "prod"}},
     "models[0].serving.kubernetes", "context is for a kubeconfig file"),
    ({"target": "kubernetes", "kubernetes": {"deployment": "ranker", "request_timeout": "0s"}},
     "models[0].serving.kubernetes.request_timeout", "must be positive"),
])
def test_conflicting_or_missing_kubernetes_settings_fail_at_load_naming_the_field(serving, field, message):
    with pytest.raises(ConfigError) as failure:
        settings_from_mapping({"models": [_model(serving)]}, source="mape.yaml")
    assert failure.value.field == field
    assert message in str(failure.value)


def test_a_relative_kubeconfig_is_resolved_against_the_config_file(tmp_path):
    settings = settings_from_mapping(
        {"models": [_model({"target": "kubernetes", "kubernetes": {"deployment": "ranker",
                                                                   "kubeconfig": "secrets/kubeconfig"}})]},
        source="mape.yaml", base=tmp_path)
    serving = settings.models[0].serving
    assert isinstance(serving, ServingConfig) and serving.kubernetes is not None
    assert serving.kubernetes.kubeconfig == tmp_path / "secrets" / "kubeconfig"
    assert serving.kubernetes.namespace == "default"


def test_the_client_is_imported_only_when_a_request_is_made():
    code = ("import sys; from pathlib import Path; from mape.config import ModelConfig; "
            "from mape.serving.factory import target_for; "
            "source = {'kind': 'parquet', 'path': '/x'}; "
            "cfg = ModelConfig(name='m', features={'numeric': ['a']}, inference=source, labels_source=source, "
            "training={'entrypoint': 'x:y'}, serving={'target': 'kubernetes', 'kubernetes': {'deployment': 'm'}}); "
            "target = target_for(cfg, Path('.')); "
            "print(type(target).__name__, 'kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["KubernetesDeployment", "False"]


def test_without_the_client_installed_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # makes ``import kubernetes`` raise ImportError
    with pytest.raises(ServingError) as failure:
        KubernetesDeployment("ranker", "ml", "ranker").replicas()
    assert failure.value.transient is False
    assert "pip install 'mape[kubernetes]'" in str(failure.value)
