"""DockerSpawner with profiles (CPU, GPU) chosen at spawn time, as KubeSpawner's profile_list.

DockerSpawner lets a user pick an image (``allowed_images``) but not the CPU, memory and
GPUs that go with it; this subclass adds :attr:`ProfileDockerSpawner.profiles` (the list in
``hub/docker-profiles.yaml``), a spawn-page form listing them, and applies the chosen one
before the container starts. A GPU profile asks Docker for that many GPUs
(``device_requests``, the NVIDIA Container Toolkit on the host).

Use it with ``NEURONOVA_HUB_SPAWNER=neuronova_lib.hub.docker_spawner.ProfileDockerSpawner``;
``hub/jupyterhub_config.py`` then loads the profiles file.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from dockerspawner import DockerSpawner
from traitlets import Dict, List, default

#: Keys a profile may set besides slug, display_name, description and default.
PROFILE_KEYS = frozenset({"image", "cpu_limit", "mem_limit", "gpus"})


def load_profiles(path: Path) -> list[dict[str, Any]]:
    """The profiles in a YAML file, checked: unique slugs, one default at most, known keys,
    an image each. A mistake is refused with the slug and the key, not at spawn time."""
    import yaml

    profiles = yaml.safe_load(path.read_text())
    if not isinstance(profiles, list) or not profiles:
        raise ValueError(f"{path}: expected a list of profiles")
    slugs = [p.get("slug") for p in profiles]
    if len(set(slugs)) != len(slugs) or not all(isinstance(s, str) and s for s in slugs):
        raise ValueError(f"{path}: every profile needs a unique slug, got {slugs}")
    if sum(bool(p.get("default")) for p in profiles) > 1:
        raise ValueError(f"{path}: more than one default profile")
    for profile in profiles:
        unknown = set(profile) - PROFILE_KEYS - {"slug", "display_name", "description",
                                                  "default"}
        if unknown:
            raise ValueError(f"{path}: profile {profile['slug']!r}: unknown {sorted(unknown)}")
        if not profile.get("image"):
            raise ValueError(f"{path}: profile {profile['slug']!r} names no image")
    return profiles


class ProfileDockerSpawner(DockerSpawner):
    """DockerSpawner whose user picks a profile (image, CPUs, memory, GPUs) at spawn time."""

    profiles = List(
        Dict(), help="Profiles: slug, display_name, image, cpu_limit, mem_limit, gpus, default."
    ).tag(config=True)

    @default("options_form")
    def _default_options_form(self) -> Any:
        return self.render_profiles_form

    def render_profiles_form(self, spawner: Any = None) -> str:
        """Radio buttons, one per profile (the hub's spawn page shows them)."""
        rows = []
        for index, profile in enumerate(self.profiles):
            checked = " checked" if profile.get("default") or (
                index == 0 and not any(p.get("default") for p in self.profiles)) else ""
            rows.append(
                f'<label><input type="radio" name="profile" value="{html.escape(profile["slug"])}"'
                f'{checked}> {html.escape(profile.get("display_name", profile["slug"]))}</label>'
                + (f'<p>{html.escape(profile["description"])}</p>'
                   if profile.get("description") else ""))
        return "\n".join(rows)

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        return {"profile": (formdata.get("profile") or [""])[0]}

    def profile(self, slug: str | None) -> dict[str, Any]:
        """The profile named ``slug`` (the default one for none); an unknown one is refused."""
        if not slug:
            return next((p for p in self.profiles if p.get("default")), self.profiles[0])
        for profile in self.profiles:
            if profile["slug"] == slug:
                return profile
        raise ValueError(f"no profile {slug!r}: choose one of "
                         f"{', '.join(p['slug'] for p in self.profiles)}")

    def apply_profile(self, profile: dict[str, Any]) -> None:
        """Set this spawner's image, limits and GPU request from ``profile``."""
        from docker.types import DeviceRequest

        self.image = profile["image"]
        if "cpu_limit" in profile:
            self.cpu_limit = float(profile["cpu_limit"])
        if "mem_limit" in profile:
            self.mem_limit = profile["mem_limit"]
        host_config = dict(self.extra_host_config)
        host_config.pop("device_requests", None)
        if int(profile.get("gpus", 0)) > 0:
            host_config["device_requests"] = [
                DeviceRequest(count=int(profile["gpus"]), capabilities=[["gpu"]])]
        self.extra_host_config = host_config

    async def start(self) -> Any:
        if self.profiles:
            self.apply_profile(self.profile(self.user_options.get("profile")))
        return await super().start()
