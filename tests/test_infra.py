"""infra/: the manifests validate against the published Kubernetes and KubeRay schemas (offline,
no cluster), agree with the engine's stage resources, keep secrets out; the image definition
installs torch first and a distribution for every module the GPU stages import."""

from __future__ import annotations

import ast
import copy
import functools
import json
import re
import shlex
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from stepedit_core.engines.stepaudio import engine as stepaudio_engine

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
DOCKERFILE = INFRA / "image" / "Dockerfile"
# The oldest Kubernetes the manifests are written for, and the newest the validator knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs() if d["kind"] == kind]
    return doc


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as `kubectl apply` with strict field
    validation does (plain JSON Schema would let a misspelt field through)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _raycluster_errors(doc: dict[str, Any]) -> list[str]:
    schema = _strict(json.loads((INFRA / "schemas" / "raycluster-v1.json").read_text()))
    validator = OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def _k8s_errors(doc: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def _pod_templates(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    spec = cluster["spec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def test_manifests_are_the_expected_kinds():
    kinds = sorted((d["apiVersion"], d["kind"]) for d in _docs())
    assert kinds == [
        ("apps/v1", "Deployment"),
        ("ray.io/v1", "RayCluster"),
        ("v1", "PersistentVolumeClaim"),
    ]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_kinds_validate_strictly(version):
    for doc in _docs():
        if doc["kind"] != "RayCluster":
            assert _k8s_errors(doc, version) == [], doc["kind"]


def test_raycluster_validates_against_the_kuberay_crd():
    assert _raycluster_errors(_one("RayCluster")) == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_raycluster_pod_templates_validate_as_kubernetes_pod_templates(version):
    for template in _pod_templates(_one("RayCluster")):
        doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
        assert _k8s_errors({**doc, "template": template}, version) == []


def test_the_validators_catch_mistakes():
    """Negative controls: each broken copy must be refused, or the checks above prove nothing."""
    cluster = _one("RayCluster")
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpec"] = typo["spec"].pop("workerGroupSpecs")
    assert any("workerGroupSpec" in e for e in _raycluster_errors(typo))
    wrong_type = copy.deepcopy(cluster)
    wrong_type["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert _raycluster_errors(wrong_type)
    no_group = copy.deepcopy(cluster)
    del no_group["spec"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e for e in _raycluster_errors(no_group))
    bad_container = copy.deepcopy(cluster)
    bad_container["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert _raycluster_errors(bad_container)

    worker = copy.deepcopy(_one("Deployment"))
    worker["spec"]["replica"] = worker["spec"].pop("replicas")
    assert _k8s_errors(worker, K8S_VERSIONS[-1])
    worker = copy.deepcopy(_one("Deployment"))
    del worker["spec"]["selector"]
    assert _k8s_errors(worker, K8S_VERSIONS[-1])


def _quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2], 1)


def test_gpu_workers_hold_one_actor_of_each_model_stage():
    group = _one("RayCluster")["spec"]["workerGroupSpecs"][0]
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    stages = stepaudio_engine.DEFAULT_GPUS
    assert set(stages) == {"tokenize", "edit", "decode"}
    assert sum(stages.values()) <= float(limits["nvidia.com/gpu"])
    actor_cpus = sum(stepaudio_engine.CPUS[s] for s in stages)
    assert actor_cpus < _quantity(limits["cpu"])  # room left for Ray Data's own tasks
    actor_memory = sum(stepaudio_engine.MEMORY_MB[s] for s in stages) * 2**20
    assert actor_memory < _quantity(limits["memory"])
    assert container["resources"]["requests"] == limits  # Guaranteed QoS: no eviction mid-run
    head = _one("RayCluster")["spec"]["headGroupSpec"]
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_every_pod_runs_the_image_with_the_clusters_ray_version():
    cluster, worker = _one("RayCluster"), _one("Deployment")
    images = {c["image"] for t in _pod_templates(cluster) for c in t["spec"]["containers"]}
    images |= {c["image"] for c in worker["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1  # Ray Client needs the same Ray and Python on both ends
    assert cluster["spec"]["rayVersion"] == _dockerfile_args()["RAY_VERSION"]


def test_prefect_worker_reaches_the_head_through_ray_client():
    cluster, worker = _one("RayCluster"), _one("Deployment")
    env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    address = env["RAY_ADDRESS"]["value"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    client_port = {p["name"]: p["containerPort"] for p in head["ports"]}["client"]
    namespace = cluster["metadata"]["namespace"]
    service = f"{cluster['metadata']['name']}-head-svc.{namespace}.svc.cluster.local"
    assert address == f"ray://{service}:{client_port}"


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "RayCluster":
        return [c for t in _pod_templates(doc) for c in t["spec"]["containers"]]
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]["containers"]
    return []


def test_secrets_reach_pods_only_by_reference():
    secret_like = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
    referenced = set()
    for doc in _docs():
        for container in _containers(doc):
            for env in container.get("env", []):
                if secret_like.search(env["name"]):
                    assert "value" not in env, f"{env['name']} is written into the manifest"
                    referenced.add(env["valueFrom"]["secretKeyRef"]["name"])
            referenced |= {s["secretRef"]["name"] for s in container.get("envFrom", [])}
    assert "stepedit-s3" in referenced
    gpu = _one("RayCluster")["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "stepedit-s3", "optional": True}} in gpu["envFrom"]


def test_models_are_mounted_read_only_where_the_engine_looks():
    claim = _one("PersistentVolumeClaim")["metadata"]["name"]
    for template in _pod_templates(_one("RayCluster"))[1:]:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["/models"]["readOnly"] is True
        assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == claim


# --- the image definition ---------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += " " + stripped.removesuffix("\\") if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            joined.append(current)
            current = ""
    return [(i.split(None, 1)[0].upper(), i.split(None, 1)[1]) for i in joined]


def _dockerfile_args() -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in _instructions() if kind == "ARG" and "=" in a)


def _pip_commands() -> list[list[str]]:
    """Every `pip install/uninstall` command of the RUN lines, ARGs substituted, in order."""
    args = _dockerfile_args()
    commands = []
    for kind, text in _instructions():
        if kind != "RUN":
            continue
        text = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), text)
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|"):
                if words[:1] == ["pip"] and words[1:2] in (["install"], ["uninstall"]):
                    commands.append(words[1:])
                words = []
            else:
                words.append(token)
    return commands


def _requirements(command: list[str]) -> list[str]:
    """The requirement words of one pip command (options and their values dropped)."""
    takes_value = {"-c", "--constraint", "-r", "--requirement", "--index-url", "-i"}
    words, skip = [], False
    for word in command[1:]:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            words.append(word)
    return words


def _project_requirements(extra: str | None = None) -> list[str]:
    """stepedit's own requirements (extra None) or those its `extra` adds, from its metadata."""
    reqs = [Requirement(r) for r in requires("stepedit") or []]
    if extra is None:
        return [str(r) for r in reqs if r.marker is None]
    return [
        f"{r.name}{r.specifier}" for r in reqs if r.marker and r.marker.evaluate({"extra": extra})
    ]


def _installed_by_image() -> dict[str, Requirement]:
    """Distribution name -> requirement the image installs, the project's own expanded into its
    dependencies and the extras named, uninstalls applied."""
    installed: dict[str, Requirement] = {}
    for command in _pip_commands():
        for word in _requirements(command):
            if command[0] == "uninstall":
                installed.pop(canonicalize_name(word), None)
                continue
            match = re.fullmatch(r"/opt/stepedit\[([\w,]+)\]", word)
            if match:
                reqs = _project_requirements()
                for extra in match[1].split(","):
                    reqs += _project_requirements(extra)
            else:
                reqs = [word]
            for req in map(Requirement, reqs):
                name = canonicalize_name(req.name)
                # a later, pinned requirement of the same distribution wins over the project's range
                if name not in installed or req.specifier:
                    installed[name] = req
    return installed


def test_torch_goes_in_first_pinned_and_stays():
    installs = [c for c in _pip_commands() if c[0] == "install" and "--upgrade" not in c]
    first = _requirements(installs[0])
    assert first[0].startswith("torch==")
    assert all(Requirement(r).specifier for r in first)  # torch and torchaudio pinned exactly
    for later in installs[1:]:
        assert "-c" in later, f"installs without the torch constraint: {later}"
    torch = Version(first[0].split("==")[1])
    (project_torch,) = [
        Requirement(r) for r in _project_requirements() if Requirement(r).name == "torch"
    ]
    assert torch in project_torch.specifier


def test_image_pins_agree_with_pyproject():
    declared = {
        canonicalize_name(r.name): r
        for r in map(Requirement, _project_requirements() + _project_requirements("stepaudio"))
    }
    for command in _pip_commands():
        for word in _requirements(command):
            if "==" not in word:
                continue
            req = Requirement(word)
            name = canonicalize_name(req.name)
            if name in declared:
                (pin,) = req.specifier
                assert Version(pin.version) in declared[name].specifier, word


# Modules a distribution provides under another name, for distributions not installed here.
_MODULE_DISTS = {
    "onnxruntime": {"onnxruntime", "onnxruntime-gpu"},
    "whisper": {"openai-whisper"},
    "yaml": {"pyyaml"},
    # vendored as funasr_detach in the checkout; its third-party needs are funasr's
    "funasr_detach": {"funasr"},
}
# Imported by the model engine only when asked for (llm_backend=vllm, guarded by find_spec);
# installing it is a choice of the image's builder.
_OPTIONAL = {"vllm"}
# What the pinned Step-Audio-EditX checkout imports on the tokenizer and decoder paths
# (tokenizer.py, model_loader.py, utils.py, stepvocoder/), third-party modules only.
_UPSTREAM_IMPORTS = {
    "einops",
    "funasr_detach",
    "hyperpyyaml",
    "librosa",
    "numpy",
    "onnxruntime",
    "scipy",
    "sox",
    "torch",
    "torchaudio",
    "transformers",
    "whisper",
}


def _stage_imports() -> set[str]:
    """Top-level third-party modules imported anywhere in the step-audio-editx engine package."""
    modules = set()
    for path in (REPO / "stepedit_core" / "engines" / "stepaudio").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "stepedit_core"}


@functools.cache
def _distributions_by_module() -> dict[str, list[str]]:
    return packages_distributions()  # scans every installed distribution: once is enough


def _providers(module: str) -> set[str]:
    known = _distributions_by_module().get(module, [])
    return {canonicalize_name(d) for d in known} | _MODULE_DISTS.get(module, {module})


def test_image_installs_what_the_gpu_stages_import():
    stage_modules = _stage_imports()
    assert {"torch", "transformers", "numpy", "yaml"} <= stage_modules  # the scan sees them
    installed = set(_installed_by_image())
    missing = {
        m for m in (stage_modules | _UPSTREAM_IMPORTS) - _OPTIONAL if not _providers(m) & installed
    }
    assert missing == set()
    assert stage_modules >= _OPTIONAL


def test_image_keeps_every_requirement_of_the_stepaudio_extra():
    installed = set(_installed_by_image())
    for word in _project_requirements("stepaudio"):
        name = canonicalize_name(Requirement(word).name)
        assert (_MODULE_DISTS.get(name, {name}) | {name}) & installed, word
    assert "onnxruntime-gpu" in installed and "onnxruntime" not in installed
