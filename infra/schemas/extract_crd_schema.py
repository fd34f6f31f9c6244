"""Extract the OpenAPI v3 schema of one version of a CustomResourceDefinition as JSON.

    python infra/schemas/extract_crd_schema.py ray.io_rayclusters.yaml v1 > raycluster-v1.json

Field descriptions are dropped (they are documentation, not constraints, and make up most of the
file); every constraint of the published schema is kept as it is.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def crd_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return without_descriptions(entry["schema"]["openAPIV3Schema"])
    raise SystemExit(f"{crd['metadata']['name']} has no version {version}")


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        crd = yaml.safe_load(handle)
    json.dump(crd_schema(crd, sys.argv[2]), sys.stdout, sort_keys=True, separators=(",", ":"))
    sys.stdout.write("\n")
