"""Every deployment profile resolves: KubeSpawner's (hub/z2jh-values.yaml) to a pod
manifest, DockerSpawner's (hub/docker-profiles.yaml) to an image, limits and GPU request.

No cluster or Docker daemon runs here: the spawners' own code turns each profile into what
they would send (KubeSpawner's ``_mock`` stands in only for the hub and user objects).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from neuronova_lib.hub.docker_spawner import ProfileDockerSpawner, load_profiles

HUB = Path(__file__).resolve().parent.parent / "hub"
VALUES = yaml.safe_load((HUB / "z2jh-values.yaml").read_text())
K8S_PROFILES = VALUES["singleuser"]["profileList"]
DOCKER_PROFILES = load_profiles(HUB / "docker-profiles.yaml")


@pytest.fixture(scope="module", autouse=True)
def _kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """KubeSpawner loads a kube config when created; this one names a cluster that is never
    contacted (building a pod manifest needs none)."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "users": [{"name": "none", "user": {}}]}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(path))
        yield


def _bytes(spec: str) -> int:
    from jupyterhub.traitlets import ByteSpecification

    return int(ByteSpecification().validate(None, spec))


def _docker_spawner() -> ProfileDockerSpawner:
    # The hub's user object: only its name is read (to fill the image template).
    return ProfileDockerSpawner(profiles=DOCKER_PROFILES,
                                user=SimpleNamespace(name="scientist", id=1, url="/user/scientist/"))


def _pod(slug: str) -> Any:
    from kubespawner import KubeSpawner

    async def resolve() -> Any:  # KubeSpawner makes its API client in a running loop
        spawner = KubeSpawner(_mock=True, profile_list=K8S_PROFILES,
                              image=f"{VALUES['singleuser']['image']['name']}:"
                                    f"{VALUES['singleuser']['image']['tag']}",
                              environment=VALUES["singleuser"]["extraEnv"])
        spawner.user_options = {"profile": slug}
        await spawner.load_user_options()
        return await spawner.get_pod_manifest()

    return asyncio.run(resolve())


@pytest.mark.parametrize("profile", K8S_PROFILES, ids=[p["slug"] for p in K8S_PROFILES])
def test_every_kubernetes_profile_resolves_to_a_pod(profile: dict[str, Any]) -> None:
    override = profile["kubespawner_override"]
    [container] = _pod(profile["slug"]).spec.containers
    limits, requests_ = container.resources.limits, container.resources.requests
    assert container.image == override.get("image", "ghcr.io/neuronova/notebook:0.1.0")
    assert float(limits["cpu"]) == override["cpu_limit"]
    assert limits["memory"] == _bytes(override["mem_limit"])
    gpus = override.get("extra_resource_limits", {}).get("nvidia.com/gpu")
    assert limits.get("nvidia.com/gpu") == gpus and requests_.get("nvidia.com/gpu") == gpus
    env = {e.name: e.value for e in container.env}
    assert env["NEURONOVA_TOKEN_SERVICE_URL"].endswith("/services/neuronova-token/")


def test_kubernetes_profiles_offer_cpu_and_gpu_and_the_hub_uses_the_platform() -> None:
    assert {p["slug"] for p in K8S_PROFILES} == {"cpu", "gpu"}
    assert [p["slug"] for p in K8S_PROFILES if p.get("default")] == ["cpu"]
    gpu = next(p for p in K8S_PROFILES if p["slug"] == "gpu")["kubespawner_override"]
    assert "cuda" in gpu["image"]
    config = VALUES["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == (
        "neuronova_lib.hub.authenticator.PlatformAuthenticator")
    assert "access:services!service=neuronova-token" in (
        config["KubeSpawner"]["server_token_scopes"])
    assert VALUES["hub"]["services"]["neuronova-token"]["command"][:3] == [
        "python", "-m", "neuronova_lib.hub.token_service"]


@pytest.mark.parametrize("profile", DOCKER_PROFILES, ids=[p["slug"] for p in DOCKER_PROFILES])
def test_every_docker_profile_resolves(profile: dict[str, Any]) -> None:
    spawner = _docker_spawner()
    form = spawner.render_profiles_form()
    assert f'value="{profile["slug"]}"' in form
    chosen = spawner.profile(spawner.options_from_form({"profile": [profile["slug"]]})["profile"])
    spawner.apply_profile(chosen)
    assert spawner.image == profile["image"]
    assert spawner.cpu_limit == profile["cpu_limit"]
    assert spawner.mem_limit == _bytes(profile["mem_limit"])
    requests_ = spawner.extra_host_config.get("device_requests", [])
    assert [r["Count"] for r in requests_] == ([profile["gpus"]] if profile.get("gpus") else [])
    assert all(r["Capabilities"] == [["gpu"]] for r in requests_)


def test_docker_default_profile_and_unknown_profiles() -> None:
    spawner = _docker_spawner()
    assert spawner.profile(None)["slug"] == "cpu" and 'value="cpu" checked' in (
        spawner.render_profiles_form())
    with pytest.raises(ValueError, match="no profile 'tpu'"):
        spawner.profile("tpu")
    assert {p["slug"] for p in DOCKER_PROFILES} == {"cpu", "gpu"}


def test_a_broken_profiles_file_is_refused_with_the_slug(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("- {slug: cpu, image: a}\n- {slug: gpu, image: b, gpu: 1}\n")
    with pytest.raises(ValueError, match=r"'gpu': unknown \['gpu'\]"):
        load_profiles(path)
    path.write_text("- {slug: cpu, image: a}\n- {slug: cpu, image: b}\n")
    with pytest.raises(ValueError, match="unique slug"):
        load_profiles(path)
