"""Check a rendered KubeRay resource before it reaches a cluster.

Four layers, each reporting ``<field path>: <problem>``:

1. jsonschema validation against the CRD's v1 openAPIV3Schema;
2. unknown fields: the KubeRay CRDs do not set ``additionalProperties: false``,
   so the API server silently prunes a misspelled field; we report it instead;
3. every pod template (head and workers) against Kubernetes' own strict schema,
   via the ``kubernetes-validate`` package;
4. the semantic rules KubeRay's controller enforces (``rules.py``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
from kubernetes_validate import utils as kubernetes_schemas
from packaging.version import Version
from referencing import Registry, Resource

from rayfleet.kuberay.crds import CRD_FILES, crd_schema
from rayfleet.kuberay.rules import kuberay_rule_problems

PathParts = Sequence[str | int]
DEFAULT_KUBERNETES_VERSION = "1.32"
CRD_API_VERSION = "ray.io/v1"
MAX_MESSAGE = 200


def format_path(parts: PathParts) -> str:
    """``("spec", "workerGroupSpecs", 0, "groupName")`` → ``spec.workerGroupSpecs[0].groupName``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def check_resource(
    resource: dict[str, Any],
    *,
    crds: Path | None = None,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
) -> list[str]:
    """Every problem found in a RayService or RayCluster, as ``path: message`` lines.

    Raises ``CrdsNotFoundError`` when the CRD files are not available.
    """
    kind = resource.get("kind")
    if resource.get("apiVersion") != CRD_API_VERSION or kind not in CRD_FILES:
        return [
            f"apiVersion/kind: expected {CRD_API_VERSION} {' or '.join(CRD_FILES)}, "
            f"got {resource.get('apiVersion')!r} {kind!r}"
        ]
    schema = crd_schema(kind, "v1", crds)
    problems: dict[str, list[str]] = {}

    def add(found: Iterator[tuple[PathParts, str]], once_per_path: bool = False) -> None:
        for parts, message in found:
            path = format_path(parts)
            if once_per_path and path in problems:
                continue  # the CRD embeds a pod schema too; say it once
            if message not in problems.setdefault(path, []):
                problems[path].append(message)

    add(schema_problems(resource, schema))
    add(unknown_fields(resource, schema, ()))
    add(pod_template_problems(resource, kubernetes_version), once_per_path=True)
    add(kuberay_rule_problems(resource))
    return [f"{path}: {message}" for path, messages in problems.items() for message in messages]


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def _unknown_field(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field {key!r}{hint}"


def _error_problems(
    validator: jsonschema.protocols.Validator, instance: Any
) -> Iterator[tuple[PathParts, str]]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = list(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(known)):
                yield [*path, key], _unknown_field(key, known)
        else:
            yield path, _short(error.message)


def schema_problems(
    resource: dict[str, Any], schema: dict[str, Any]
) -> Iterator[tuple[PathParts, str]]:
    """Type, enum, pattern and required-field errors against the CRD schema."""
    yield from _error_problems(jsonschema.Draft7Validator(schema), resource)


def unknown_fields(
    value: Any, schema: dict[str, Any], path: PathParts
) -> Iterator[tuple[PathParts, str]]:
    """Fields the schema does not declare, wherever it declares ``properties``."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        children = schema.get("additionalProperties")
        for key, child in value.items():
            if properties is not None and key not in properties:
                yield [*path, key], _unknown_field(key, list(properties))
            elif properties is not None:
                yield from unknown_fields(child, properties[key], [*path, key])
            elif isinstance(children, dict):
                yield from unknown_fields(child, children, [*path, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], [*path, index])


def pod_templates(resource: dict[str, Any]) -> Iterator[tuple[PathParts, dict[str, Any]]]:
    """(path, template) of the head and every worker group."""
    spec = resource.get("spec")
    if not isinstance(spec, dict):
        return
    prefix: list[str | int] = ["spec"]
    cluster: Any = spec
    if resource.get("kind") == "RayService":
        cluster = spec.get("rayClusterConfig")
        prefix.append("rayClusterConfig")
    if not isinstance(cluster, dict):
        return
    head = cluster.get("headGroupSpec")
    if isinstance(head, dict) and isinstance(head.get("template"), dict):
        yield [*prefix, "headGroupSpec", "template"], head["template"]
    workers = cluster.get("workerGroupSpecs")
    for index, worker in enumerate(workers if isinstance(workers, list) else []):
        if isinstance(worker, dict) and isinstance(worker.get("template"), dict):
            yield [*prefix, "workerGroupSpecs", index, "template"], worker["template"]


def pod_template_problems(
    resource: dict[str, Any], kubernetes_version: str
) -> Iterator[tuple[PathParts, str]]:
    """Each template wrapped in a PodTemplate and checked by Kubernetes' strict schema."""
    validator = pod_template_validator(kubernetes_version)
    for path, template in pod_templates(resource):
        wrapper = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "rayfleet-check"},
            "template": template,
        }
        for found, message in _error_problems(validator, wrapper):
            # Re-root the wrapper's "template..." at the template's place in the resource.
            inner = list(found)[1:] if list(found)[:1] == ["template"] else list(found)
            yield [*path, *inner], message


@lru_cache(maxsize=4)
def pod_template_validator(kubernetes_version: str) -> jsonschema.protocols.Validator:
    """A strict PodTemplate validator for the newest bundled schema not newer than asked."""
    wanted = Version(kubernetes_version.removeprefix("v"))
    versions = [v for v in kubernetes_schemas.all_versions() if Version(v) <= wanted]
    if not versions:
        raise ValueError(f"kubernetes-validate has no schema for Kubernetes {kubernetes_version}")
    folder = f"kubernetes-json-schema/v{versions[-1]}-local-strict"
    schema = kubernetes_schemas.schema_contents(f"{folder}/podtemplate-v1.json", kubernetes_version)
    definitions = kubernetes_schemas.schema_contents(
        f"{folder}/_definitions.json", kubernetes_version
    )
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(
        schema, registry=registry
    )
    return validator
