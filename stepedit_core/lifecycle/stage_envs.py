"""A Python environment of its own for a model stage, through Ray runtime environments.

The Step-Audio-EditX tokenizer and decoder come from the public repository, which pins its own
stack (torch/torchaudio 2.8, transformers 4.53.3). Rather than bending the driver's environment
(current Prefect, Ray, torch) to that pin, a stage can run its Ray workers in another
environment:

- an interpreter: `--stage-python decode=/opt/stepaudio/bin/python` (Ray's `py_executable`);
- a container image: `--stage-image decode=registry/stepaudio:1` (Ray's `image_uri`; the image's
  Python runs the workers, Ray runs them with podman).

The other environment must hold the same Ray version and Python minor version as the cluster
(Ray refuses workers that differ) and stepedit itself (the stage's code is unpickled there);
`probe` asks an interpreter for those versions so `stepedit validate` can show and check what
will run each stage. Bookkeeping stages that ride with a model stage run in its environment too.
Only the Ray executor can honour a stage environment; the in-process executor refuses them.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

# What `probe` reports: the packages that decide how upstream's code behaves, plus the two that
# must match the driver for a Ray worker to start and run a stage at all.
PACKAGES = ("torch", "transformers", "torchaudio", "ray", "stepedit")

# Run by the other interpreter (any Python 3): prints one JSON object of versions.
_PROBE = """
import json, platform, sys
from importlib import metadata

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

found = {"python": platform.python_version(), "executable": sys.executable}
found.update({name: version(name) for name in NAMES})
print(json.dumps(found))
""".replace("NAMES", repr(PACKAGES))


class StageEnvError(ValueError):
    """A stage environment that can not be used (unknown stage, both kinds, unusable env)."""


@dataclass(frozen=True)
class StageEnv:
    """Where one stage's workers run: another interpreter, or a container image."""

    python: str | None = None  # path of (or command starting) the interpreter
    image: str | None = None  # container image URI

    def runtime_env(self) -> dict[str, Any] | None:
        """The Ray runtime environment for the stage's workers (None: the cluster's own)."""
        if self.python:
            return {"py_executable": self.python}
        if self.image:
            return {"image_uri": self.image}
        return None

    def describe(self) -> str:
        if self.python:
            return f"interpreter {self.python}"
        if self.image:
            return f"image {self.image}"
        return "the driver's interpreter"


def stage_envs(
    python: Mapping[str, str] | None = None, images: Mapping[str, str] | None = None
) -> dict[str, StageEnv]:
    """Stage name -> StageEnv from the per-stage interpreter and image settings."""
    python, images = dict(python or {}), dict(images or {})
    both = sorted(set(python) & set(images))
    if both:
        raise StageEnvError(
            f"stage {', '.join(both)}: give an interpreter or an image, not both "
            "(Ray runs an image's own Python)"
        )
    envs = {name: StageEnv(python=path) for name, path in python.items() if path}
    envs.update({name: StageEnv(image=uri) for name, uri in images.items() if uri})
    return envs


def check_stage_names(envs: Mapping[str, StageEnv], stage_names: Iterable[str]) -> None:
    """Refuse an environment for a stage the engine does not have (a typo would otherwise run
    that stage in the driver's environment without a word)."""
    known = list(dict.fromkeys(stage_names))
    unknown = sorted(set(envs) - set(known))
    if unknown:
        raise StageEnvError(
            f"no stage {', '.join(map(repr, unknown))} to give an environment to; "
            f"the engine's stages: {', '.join(known)}"
        )


def probe(python: str, timeout: float = 120.0) -> dict[str, str | None]:
    """Ask an interpreter (a path or a command line) for its Python and package versions."""
    command = [*shlex.split(python), "-c", _PROBE]
    return _run_probe(command, python, timeout)


def probe_image(image: str, timeout: float = 600.0) -> dict[str, str | None] | None:
    """The versions inside a container image, when docker or podman is here to ask; else None."""
    runner = shutil.which("podman") or shutil.which("docker")
    if runner is None:
        return None
    command = [runner, "run", "--rm", "--entrypoint", "python", image, "-c", _PROBE]
    return _run_probe(command, image, timeout)


def _run_probe(command: list[str], what: str, timeout: float) -> dict[str, str | None]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StageEnvError(f"{what}: can not run it ({exc})") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StageEnvError(f"{what}: exited with status {done.returncode}: {tail[0]}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise StageEnvError(f"{what}: unexpected answer {done.stdout[-200:]!r}") from exc


def this_interpreter() -> dict[str, str | None]:
    """The same report as `probe`, for the running interpreter."""
    import sys

    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "executable": sys.executable,
    }
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def problems(versions: Mapping[str, str | None], driver: Mapping[str, str | None]) -> list[str]:
    """Why a Ray worker with `versions` could not run a stage for a driver with `driver`."""
    found = []
    minor = ".".join(str(driver.get("python") or "").split(".")[:2])
    if not str(versions.get("python") or "").startswith(minor + "."):
        found.append(f"Python {versions.get('python')} (the cluster runs {minor})")
    if versions.get("ray") != driver.get("ray"):
        found.append(f"ray {versions.get('ray')} (the cluster runs {driver.get('ray')})")
    if not versions.get("stepedit"):
        found.append("stepedit is not installed there")
    return found


def format_versions(versions: Mapping[str, str | None]) -> str:
    parts = [f"python {versions.get('python')}"]
    parts += [f"{name} {versions.get(name) or '-'}" for name in PACKAGES]
    return ", ".join(parts)


def report(
    stage_names: Iterable[str], envs: Mapping[str, StageEnv]
) -> list[tuple[str, str, dict[str, str | None] | None, list[str]]]:
    """Per stage: (stage, where it runs, versions or None when they can not be asked, problems).
    Each interpreter or image is asked once."""
    driver = this_interpreter()
    asked: dict[str, dict[str, str | None] | None] = {"": driver}
    failed: dict[str, str] = {}
    rows = []
    for stage in dict.fromkeys(stage_names):
        env = envs.get(stage, StageEnv())
        key = env.python or env.image or ""
        if key not in asked:
            try:
                asked[key] = probe(env.python) if env.python else probe_image(key)
            except StageEnvError as exc:
                asked[key] = None
                failed[key] = str(exc)
        versions = asked[key]
        found = [failed[key]] if key in failed else []
        if versions is not None and key:
            found += problems(versions, driver)
        rows.append((stage, env.describe(), versions, found))
    return rows


def report_lines(
    rows: Iterable[tuple[str, str, dict[str, str | None] | None, list[str]]],
) -> list[str]:
    """`report` as text, one line per stage and one per problem."""
    lines = []
    for stage, where, versions, found in rows:
        shown = format_versions(versions) if versions else "versions unknown"
        lines.append(f"  stage {stage}: {where}: {shown}")
        lines += [f"    problem: {problem}" for problem in found]
    return lines
