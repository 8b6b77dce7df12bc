"""Kubernetes manifests as data: the one pod-spec walker, and YAML/JSON text into objects and their images. No I/O.

`container_images` is how every part of ccr-webhook finds the containers of a pod spec (admission, the
`check` report, the warmer, retention), so they agree on the lists, their order and the JSON pointers.
The `check` command reads files and prints; this module only turns text into `WorkloadImage`s, so the
shapes of every workload kind are tested with plain strings.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from webhook.errors import CCRWebhookError

# Where each workload kind keeps its pod spec, and the API groups that define that kind.
POD_SPEC_PATHS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "Pod": (("spec",), frozenset({""})),
    "PodTemplate": (("template", "spec"), frozenset({""})),
    "ReplicationController": (("spec", "template", "spec"), frozenset({""})),
    "Deployment": (("spec", "template", "spec"), frozenset({"apps", "extensions"})),
    "StatefulSet": (("spec", "template", "spec"), frozenset({"apps"})),
    "DaemonSet": (("spec", "template", "spec"), frozenset({"apps", "extensions"})),
    "ReplicaSet": (("spec", "template", "spec"), frozenset({"apps", "extensions"})),
    "Job": (("spec", "template", "spec"), frozenset({"batch"})),
    "CronJob": (("spec", "jobTemplate", "spec", "template", "spec"), frozenset({"batch"})),
}
# The container lists of a pod spec, in the order every walker reports them (admission's patches follow it).
CONTAINER_LISTS: tuple[str, ...] = ("containers", "initContainers", "ephemeralContainers")


class PodSpecError(CCRWebhookError):
    """A malformed container list of a pod spec, said from the spec down: `containers[0].image must be a string`."""


@dataclass(frozen=True, slots=True)
class ContainerImage:
    """One container of a pod spec: its list, its index there, its name ('' if none), its image (None if none)."""

    container_list: str
    index: int
    name: str
    image: str | None
    pointer: str  # the JSON pointer of the image field, from the root of the object the spec was found in


def container_images(
    spec: Mapping[str, Any],
    base: tuple[str, ...] = ("spec",),
    *,
    lists: Iterable[str] = CONTAINER_LISTS,
    strict: bool = True,
) -> Iterator[ContainerImage]:
    """Every container of the pod spec `spec` (found at `base` in its object), list by list in CONTAINER_LISTS order.

    Malformed lists, containers or images raise PodSpecError when `strict`, and are skipped otherwise.
    """
    for list_name in lists:
        containers = spec.get(list_name)
        if containers is None:
            continue
        if not isinstance(containers, list):
            if strict:
                raise PodSpecError(f"{list_name} must be a list of objects")
            continue
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                if strict:
                    raise PodSpecError(f"{list_name}[{index}] must be an object")
                continue
            image, name = container.get("image"), container.get("name")
            if image is not None and not isinstance(image, str):
                if strict:
                    raise PodSpecError(f"{list_name}[{index}].image must be a string")
                continue
            yield ContainerImage(
                container_list=list_name,
                index=index,
                name=name if isinstance(name, str) else "",
                image=image,
                pointer="/" + "/".join((*base, list_name, str(index), "image")),
            )


class ManifestError(CCRWebhookError):
    """Text that is not a readable manifest; names the source and, where known, the line."""

    def __init__(self, source: str, message: str, line: int | None = None, column: int | None = None) -> None:
        where = source + "".join(f":{number}" for number in (line, column) if number is not None)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Document:
    """One Kubernetes object read from `source`; `index` counts the documents of that source from 1."""

    source: str
    index: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WorkloadImage:
    """One container image of one workload, with where it stands (`pointer` is a JSON pointer to the image)."""

    source: str
    document: int
    kind: str
    namespace: str | None
    name: str
    container: str
    container_list: str
    pointer: str
    image: str


@dataclass
class Inventory:
    """Every container image found, and what was read to find them."""

    images: list[WorkloadImage] = field(default_factory=list)
    documents: int = 0
    objects: int = 0
    workloads: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def parse_documents(text: str, source: str, as_json: bool) -> list[Document]:
    """The non-empty documents of a YAML stream or a JSON text, `kind: List` items spread out."""
    bodies = _load_json(text, source) if as_json else _load_yaml(text, source)
    documents: list[Document] = []
    for index, body in enumerate(bodies, start=1):
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ManifestError(source, f"document {index} is a {type(body).__name__}, not a Kubernetes object")
        documents.extend(Document(source, index, item) for item in _spread_lists(body, source, index))
    return documents


def looks_like_json(text: str) -> bool:
    """True when `text` starts as a JSON object or array does (for stdin, which has no file name)."""
    return text.lstrip()[:1] in ("{", "[")


def find_images(documents: Iterable[Document]) -> Inventory:
    """Every container image in `documents`; objects without a pod spec are counted by kind and skipped."""
    inventory = Inventory()
    read: set[tuple[str, int]] = set()
    for document in documents:
        read.add((document.source, document.index))
        inventory.objects += 1
        kind = document.body.get("kind")
        path = _pod_spec_path(document.body)
        if path is None:
            inventory.skipped[kind if isinstance(kind, str) and kind else "(no kind)"] += 1
            continue
        inventory.workloads += 1
        inventory.images.extend(_workload_images(document, str(kind), path))
    inventory.documents = len(read)
    return inventory


def object_images(body: Mapping[str, Any]) -> list[str]:
    """The images of a Kubernetes object's pod spec, malformed containers skipped (for objects read from the API)."""
    path = _pod_spec_path(body)
    spec: Any = body
    for key in path or ():
        spec = spec.get(key) if isinstance(spec, dict) else None
    if path is None or not isinstance(spec, dict):
        return []
    return [c.image for c in container_images(spec, path, strict=False) if c.image is not None]


def _load_yaml(text: str, source: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ManifestError(source, f"invalid YAML: {err.problem or err.context}", line, column) from None
    except yaml.YAMLError as err:
        raise ManifestError(source, f"invalid YAML: {err}") from None


def _load_json(text: str, source: str) -> list[Any]:
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as err:
        raise ManifestError(source, f"invalid JSON: {err.msg}", err.lineno, err.colno) from None


def _spread_lists(body: dict[str, Any], source: str, index: int) -> Iterator[dict[str, Any]]:
    """`body` itself, or the items of a List (`kind: List`, or a typed list such as `PodList`), recursively."""
    kind = body.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in body):
        yield body
        return
    items = body["items"]
    if items is None:
        return
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ManifestError(source, f"document {index}: {kind}.items must be a list of objects")
    for item in items:
        if "kind" not in item and kind != "List":
            item = {"kind": kind[: -len("List")], "apiVersion": body.get("apiVersion"), **item}
        yield from _spread_lists(item, source, index)


def _pod_spec_path(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Where `body` keeps its pod spec, or None for kinds (or same-named kinds of other API groups) without one."""
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if not isinstance(kind, str) or kind not in POD_SPEC_PATHS:
        return None
    path, groups = POD_SPEC_PATHS[kind]
    if isinstance(api_version, str) and api_version.rpartition("/")[0] not in groups:
        return None
    return path


def _workload_images(document: Document, kind: str, path: tuple[str, ...]) -> Iterator[WorkloadImage]:
    metadata = document.body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name") or (f"{metadata['generateName']}*" if metadata.get("generateName") else "(unnamed)")
    namespace = metadata.get("namespace")
    where = f"document {document.index} ({kind} {name})"
    spec: Any = document.body
    for key in path:
        spec = spec.get(key) if isinstance(spec, dict) else None
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise ManifestError(document.source, f"{where}: {'.'.join(path)} must be an object")
    try:
        found = list(container_images(spec, path))
    except PodSpecError as err:
        raise ManifestError(document.source, f"{where}: {'.'.join(path)}.{err}") from None
    for container in found:
        yield WorkloadImage(
            source=document.source,
            document=document.index,
            kind=kind,
            namespace=namespace if isinstance(namespace, str) else None,
            name=str(name),
            container=container.name or f"#{container.index}",
            container_list=container.container_list,
            pointer=container.pointer,
            image=container.image or "",
        )
