"""An in-memory Kubernetes API server on 127.0.0.1 for the demo and the tests, spoken to by the real kubernetes client.

Product code beside local_servers.py: `ccr-webhook demo` runs the warmer against it as the tests do.

Generic over resources: any group/version/plural, namespaced or cluster-scoped. It keeps what the
client relies on: create/get/list/update/patch/delete, a resourceVersion on every object with conflicts
on stale writes, label and field selectors, and list+watch (JSON lines of ADDED/MODIFIED/DELETED from a
resourceVersion, an ERROR event with 410 Gone for one too old, timeoutSeconds; as the real watch cache, an
object that starts or stops matching a watch's selector arrives as ADDED or DELETED, and with
allowWatchBookmarks a BOOKMARK carries the latest resourceVersion every `bookmark_seconds`). No authentication,
admission, defaulting, validation, garbage collection or server-side apply.

    with LocalAPIServer() as server:
        server.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}})
        v1 = kubernetes.client.CoreV1Api(server.api_client())
        v1.list_namespaced_pod("default")
        server.objects("Pod")                 # what the code under test left behind
        server.requests                       # what it asked, in order
        server.fail_next(500, method="PATCH") # make the next PATCH fail
        server.compact()                      # watches from an older resourceVersion now get 410

Strategic merge patches are applied as JSON merge patches (lists are replaced, not merged by key).
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import secrets
import select
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonpatch
import yaml


@dataclass(frozen=True)
class Resource:
    """One kind of object the server stores."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN_RESOURCES = (
    Resource("", "v1", "Pod", "pods"),
    Resource("", "v1", "Event", "events"),
    Resource("", "v1", "Secret", "secrets"),
    Resource("", "v1", "ConfigMap", "configmaps"),
    Resource("", "v1", "Service", "services"),
    Resource("", "v1", "ServiceAccount", "serviceaccounts"),
    Resource("", "v1", "Namespace", "namespaces", namespaced=False),
    Resource("", "v1", "Node", "nodes", namespaced=False),
    Resource("apps", "v1", "Deployment", "deployments"),
    Resource("apps", "v1", "ReplicaSet", "replicasets"),
    Resource("apps", "v1", "StatefulSet", "statefulsets"),
    Resource("apps", "v1", "DaemonSet", "daemonsets"),
    Resource("batch", "v1", "Job", "jobs"),
    Resource("batch", "v1", "CronJob", "cronjobs"),
    Resource("events.k8s.io", "v1", "Event", "events"),
    Resource("coordination.k8s.io", "v1", "Lease", "leases"),
    Resource(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        namespaced=False,
    ),
    Resource(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        namespaced=False,
    ),
)

_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class APIError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or _REASONS.get(code, "Unknown")

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": str(self),
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered (or failed on purpose)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


@dataclass
class _Fault:
    status: int
    method: str | None
    path_contains: str | None
    times: int
    message: str


@dataclass
class _Event:
    resource_version: int
    type: str
    key: tuple[str, str]  # (group, plural)
    obj: dict[str, Any]
    previous: dict[str, Any] | None = None  # the object before a MODIFIED, to judge selectors as the watch cache does


@dataclass
class _Store:
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)  # (group, plural, ns, name)
    events: list[_Event] = field(default_factory=list)
    resource_version: int = 0
    compacted_through: int = 0  # watches from a resourceVersion below this get 410


class LocalAPIServer:
    """The server; see the module docstring. Listens on 127.0.0.1, plain HTTP or TLS (`tls=True`)."""

    def __init__(self, tls: bool = False, history: int = 10_000, resources: tuple[Resource, ...] = ()) -> None:
        self.tls = tls
        self.history = history
        self.bookmark_seconds = 60.0  # how often an idle watch that allows bookmarks gets one (as the watch cache)
        self._resources: list[Resource] = list(BUILTIN_RESOURCES) + list(resources)
        self._store = _Store()
        self._changed = threading.Condition()
        self._faults: list[_Fault] = []
        self._stopping = False
        self.requests: list[RecordedRequest] = []
        self._open_watches: list[str] = []  # the paths of the watch streams being served
        self._workdir = Path(tempfile.mkdtemp(prefix="ccr-apiserver-"))
        self.ca_file: Path | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> LocalAPIServer:
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        if self.tls:
            from webhook.tls import generate_ca, issue_serving_cert

            ca = generate_ca("fake-apiserver CA")
            pair = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
            self.ca_file = self._workdir / "ca.crt"
            self.ca_file.write_bytes(ca.cert_pem)
            pair.write(self._workdir / "tls.crt", self._workdir / "tls.key")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._workdir / "tls.crt", self._workdir / "tls.key")
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LocalAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- clients ------------------------------------------------------------------------------------

    def configuration(self) -> Any:
        """A `kubernetes.client.Configuration` pointing at this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        if self.tls:
            configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": "fake-token"}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return configuration

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this server; close it when done (or let it be collected)."""
        from kubernetes import client

        return client.ApiClient(self.configuration())

    def write_kubeconfig(self, path: str | Path | None = None) -> Path:
        """A kubeconfig file naming this server, for code that loads one (`--kubeconfig`, $KUBECONFIG)."""
        path = Path(path) if path else self._workdir / "kubeconfig"
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls:
            cluster["certificate-authority"] = str(self.ca_file)
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": cluster}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # -- the test-side API ---------------------------------------------------------------------------

    def register(self, resource: Resource) -> None:
        """Teach the server a kind it does not know (a custom resource)."""
        self._resources.append(resource)

    def resource(self, kind: str, api_version: str | None = None) -> Resource:
        """The resource for a kind ("Pod"), or plural ("pods"), optionally of one apiVersion."""
        matches = [
            r
            for r in self._resources
            if kind in (r.kind, r.plural) and (api_version is None or r.api_version == api_version)
        ]
        if not matches:
            raise KeyError(f"unknown kind {kind!r}{f' in {api_version}' if api_version else ''}; register() it")
        return matches[0]  # the core group comes first, so "Event" is core/v1 unless asked otherwise

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object (as POST would) and return it with its metadata filled in."""
        resource = self.resource(obj["kind"], obj.get("apiVersion"))
        return self._create(
            resource, obj.get("metadata", {}).get("namespace", "default" if resource.namespaced else ""), obj
        )

    def get(
        self, kind: str, name: str, namespace: str | None = None, api_version: str | None = None
    ) -> dict[str, Any] | None:
        resource = self.resource(kind, api_version)
        with self._changed:
            found = self._store.objects.get(self._key(resource, namespace or "", name))
            return copy.deepcopy(found) if found else None

    def objects(self, kind: str, namespace: str | None = None, api_version: str | None = None) -> list[dict[str, Any]]:
        """Every stored object of a kind (in one namespace, if given), oldest first."""
        resource = self.resource(kind, api_version)
        with self._changed:
            return [copy.deepcopy(o) for o in self._select(resource, namespace, "", "")]

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace a stored object (as PUT would; a resourceVersion in `obj` is checked)."""
        resource = self.resource(obj["kind"], obj.get("apiVersion"))
        meta = obj["metadata"]
        return self._replace(resource, meta.get("namespace", "") if resource.namespaced else "", meta["name"], obj)

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Merge-patch a stored object."""
        resource = self.resource(kind)
        return self._patch(resource, namespace or "", name, "application/merge-patch+json", patch)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self._delete(self.resource(kind), namespace or "", name)

    def fail_next(
        self,
        status: int,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        message: str = "injected failure",
    ) -> None:
        """Answer the next `times` matching requests with an error Status instead of serving them."""
        with self._changed:
            self._faults.append(_Fault(status, method, path_contains, times, message))

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: older resourceVersions now get 410 Gone."""
        with self._changed:
            self._store.events.clear()
            self._store.compacted_through = self._store.resource_version

    @property
    def resource_version(self) -> int:
        return self._store.resource_version

    def open_watches(self, path: str) -> int:
        """How many watch streams on exactly `path` (e.g. `/api/v1/pods`) are open now."""
        with self._changed:
            return self._open_watches.count(path)

    def requests_to(self, method: str, path_contains: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_contains in r.path]

    # -- storage ------------------------------------------------------------------------------------

    @staticmethod
    def _key(resource: Resource, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (resource.group, resource.plural, namespace if resource.namespaced else "", name)

    def _select(
        self, resource: Resource, namespace: str | None, label_selector: str, field_selector: str
    ) -> list[dict[str, Any]]:
        labels, fields = _parse_label_selector(label_selector), _parse_field_selector(field_selector)
        found = []
        for (group, plural, ns, _name), obj in self._store.objects.items():
            if (group, plural) != (resource.group, resource.plural) or (namespace and ns != namespace):
                continue
            if _matches(obj, labels, fields):
                found.append(obj)
        return found

    def _record(
        self, event_type: str, resource: Resource, obj: dict[str, Any], previous: dict[str, Any] | None = None
    ) -> None:
        """Called with the lock held, after a change."""
        self._store.events.append(
            _Event(
                int(obj["metadata"]["resourceVersion"]),
                event_type,
                (resource.group, resource.plural),
                copy.deepcopy(obj),
                copy.deepcopy(previous),
            )
        )
        if len(self._store.events) > self.history:
            dropped = self._store.events.pop(0)
            self._store.compacted_through = dropped.resource_version
        self._changed.notify_all()

    def _next_version(self) -> str:
        self._store.resource_version += 1
        return str(self._store.resource_version)

    def _create(self, resource: Resource, namespace: str, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise APIError(
                    400,
                    f"the namespace of the object ({meta['namespace']}) does not match the namespace of the request "
                    f"({namespace})",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise APIError(422, f"{resource.kind} is invalid: metadata.name: Required value")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        with self._changed:
            key = self._key(resource, namespace, meta["name"])
            if key in self._store.objects:
                raise APIError(409, f'{resource.plural} "{meta["name"]}" already exists', "AlreadyExists")
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_timestamp(), generation=1)
            if dry_run:
                meta["resourceVersion"] = str(self._store.resource_version)
                return obj
            meta["resourceVersion"] = self._next_version()
            self._store.objects[key] = obj
            self._record("ADDED", resource, obj)
            return copy.deepcopy(obj)

    def _existing(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        found = self._store.objects.get(self._key(resource, namespace, name))
        if found is None:
            raise APIError(404, f'{resource.plural} "{name}" not found')
        return found

    def _replace(
        self, resource: Resource, namespace: str, name: str, obj: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        with self._changed:
            old = self._existing(resource, namespace, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise APIError(
                    400, f"the name of the object ({meta['name']}) does not match the name in the request ({name})"
                )
            wanted = meta.get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise APIError(
                    409,
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            for kept in ("uid", "creationTimestamp", "namespace"):
                if kept in old["metadata"]:
                    meta[kept] = old["metadata"][kept]
            meta["name"] = name
            meta["generation"] = old["metadata"].get("generation", 1) + (obj.get("spec") != old.get("spec"))
            obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
            if dry_run:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
                return obj
            meta["resourceVersion"] = self._next_version()
            self._store.objects[self._key(resource, namespace, name)] = obj
            self._record("MODIFIED", resource, obj, old)
            return copy.deepcopy(obj)

    def _patch(
        self, resource: Resource, namespace: str, name: str, content_type: str, patch: Any, dry_run: bool = False
    ) -> dict[str, Any]:
        with self._changed:
            old = copy.deepcopy(self._existing(resource, namespace, name))
            if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise APIError(400, "a merge patch must be a JSON object")
                new = _merge_patch(old, patch)
            elif content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise APIError(400, "a JSON patch must be a JSON array of operations")
                try:
                    new = jsonpatch.apply_patch(old, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
                    raise APIError(422, f"the JSON patch cannot be applied: {err}") from None
            else:
                raise APIError(415, f"the patch content type {content_type!r} is not supported by the fake API server")
            wanted = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            new.setdefault("metadata", {})["resourceVersion"] = wanted or old["metadata"]["resourceVersion"]
            return self._replace(resource, namespace, name, new, dry_run)

    def _delete(self, resource: Resource, namespace: str, name: str, dry_run: bool = False) -> dict[str, Any]:
        with self._changed:
            obj = copy.deepcopy(self._existing(resource, namespace, name))
            if dry_run:
                return obj
            del self._store.objects[self._key(resource, namespace, name)]
            obj["metadata"]["resourceVersion"] = self._next_version()
            self._record("DELETED", resource, obj)
            return obj

    # -- HTTP ---------------------------------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._changed:
            for fault in self._faults:
                if (fault.method in (None, method)) and (fault.path_contains is None or fault.path_contains in path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _route(self, path: str) -> tuple[Resource, str | None, str | None, str | None]:
        """(resource, namespace, name, subresource) for an API path, or APIError 404."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise APIError(404, f"the server could not find the requested resource ({path})")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise APIError(404, f"the server could not find the requested resource ({path})")
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        for resource in self._resources:
            if (resource.group, resource.version, resource.plural) == (group, version, plural):
                if namespace is not None and not resource.namespaced:
                    break
                if sub not in (None, "status"):
                    raise APIError(404, f"the fake API server has no {sub} subresource ({path})")
                return resource, namespace, name, sub
        raise APIError(404, f"the server could not find the requested resource ({path})")

    def _list_body(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        with self._changed:
            items = [
                copy.deepcopy(o)
                for o in self._select(
                    resource, namespace, query.get("labelSelector", ""), query.get("fieldSelector", "")
                )
            ]
            version = str(self._store.resource_version)
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    def _watch(
        self,
        resource: Resource,
        namespace: str | None,
        query: dict[str, str],
        send: Any,
        client_gone: Callable[[], bool] = lambda: False,
    ) -> None:
        """Stream events until timeoutSeconds, the client leaving, or the server stopping."""
        labels = _parse_label_selector(query.get("labelSelector", ""))
        fields = _parse_field_selector(query.get("fieldSelector", ""))
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout

        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")

        def seen(event: _Event) -> tuple[str, dict[str, Any]] | None:
            """The event as this watch sees it, filtered as the watch cache does: leaving the selector is DELETED."""
            obj = event.obj
            if event.key != (resource.group, resource.plural):
                return None
            if namespace and obj["metadata"].get("namespace") != namespace:
                return None
            now = _matches(obj, labels, fields)
            before = event.previous is not None and _matches(event.previous, labels, fields)
            if event.type != "MODIFIED" or now == before:
                return (event.type, obj) if now else None
            if now:
                return ("ADDED", obj)
            gone = copy.deepcopy(event.previous or {})
            gone.setdefault("metadata", {})["resourceVersion"] = obj["metadata"]["resourceVersion"]
            return ("DELETED", gone)

        start = query.get("resourceVersion") or "0"
        with self._changed:
            if start == "0":
                since = self._store.resource_version
                initial = [
                    ("ADDED", copy.deepcopy(o))
                    for o in self._select(resource, namespace, "", "")
                    if _matches(o, labels, fields)
                ]
            else:
                since = int(start)
                initial = []
                if since < self._store.compacted_through:
                    gone = APIError(
                        410, f"too old resource version: {since} ({self._store.compacted_through})", "Expired"
                    )
                    initial = [("ERROR", gone.status())]
        for event_type, obj in initial:
            send(event_type, obj)
            if event_type == "ERROR":
                return
        last_sent = time.monotonic()
        while True:
            with self._changed:
                pending = [e for e in self._store.events if e.resource_version > since]
                while not pending and not self._stopping:
                    now = time.monotonic()
                    if deadline - now <= 0:
                        return
                    if bookmarks and now - last_sent >= self.bookmark_seconds:
                        break
                    if client_gone():
                        return
                    wake = min(deadline, last_sent + self.bookmark_seconds) if bookmarks else deadline
                    self._changed.wait(min(max(wake - now, 0.001), _GONE_CHECK_SECONDS))
                    pending = [e for e in self._store.events if e.resource_version > since]
                if self._stopping:
                    return
            if not pending:
                bookmark = {"kind": resource.kind, "apiVersion": resource.api_version}
                send("BOOKMARK", {**bookmark, "metadata": {"resourceVersion": str(since)}})
                last_sent = time.monotonic()
            for event in pending:
                since = event.resource_version
                delivered = seen(event)
                if delivered is not None:
                    send(*delivered)
                    last_sent = time.monotonic()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: LocalAPIServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        api = self.api
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip() or None
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, APIError(400, "the request body is not JSON").status())
            return
        api.requests.append(RecordedRequest(method, url.path, query, content_type, body))
        fault = api._take_fault(method, url.path)
        if fault is not None:
            self._send(fault.status, APIError(fault.status, fault.message).status())
            return
        try:
            resource, namespace, name, _sub = api._route(url.path)
            dry_run = "dryRun" in query
            if method == "GET" and name is None and query.get("watch", "").lower() in ("1", "true"):
                self._stream(resource, namespace, query)
                return
            if method == "GET" and name is None:
                self._send(200, api._list_body(resource, namespace, query))
            elif method == "GET":
                with api._changed:
                    found = copy.deepcopy(api._existing(resource, namespace or "", name or ""))
                self._send(200, found)
            elif method == "POST" and name is None:
                self._send(201, api._create(resource, namespace or "", body or {}, dry_run))
            elif method == "PUT" and name is not None:
                self._send(200, api._replace(resource, namespace or "", name, body or {}, dry_run))
            elif method == "PATCH" and name is not None:
                self._send(200, api._patch(resource, namespace or "", name, content_type or "", body, dry_run))
            elif method == "DELETE" and name is not None:
                self._send(200, api._delete(resource, namespace or "", name, dry_run))
            else:
                raise APIError(405, f"{method} is not supported on {url.path}")
        except APIError as err:
            self._send(err.code, err.status())

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        """Whether the watch's client hung up (it sends nothing while it watches, so anything readable is its end)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable)

    def _stream(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(event_type: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        path = urlsplit(self.path).path
        with self.api._changed:
            self.api._open_watches.append(path)
        try:
            self.api._watch(resource, namespace, query, send, self._client_gone)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            with self.api._changed:
                self.api._open_watches.remove(path)


_GONE_CHECK_SECONDS = 0.25  # how often an idle watch looks whether its client is still there, as the real one does

# -- selectors and patches ----------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _parse_label_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """`a=b,c!=d,e,!f,g in (x,y),h notin (z)` as (key, operator, values) terms."""
    terms: list[tuple[str, str, set[str]]] = []
    for part in re.split(r",(?![^()]*\))", text or ""):
        part = part.strip()
        if not part:
            continue
        match = _SET_TERM.match(part)
        if match:
            terms.append((match[1], match[2], {v.strip() for v in match[3].split(",") if v.strip()}))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            terms.append((key.strip(), "!=", {value.strip()}))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", {value.strip()}))
        elif part.startswith("!"):
            terms.append((part[1:].strip(), "!exists", set()))
        else:
            terms.append((part, "exists", set()))
    return terms


def _parse_field_selector(text: str) -> list[tuple[str, str, str]]:
    """`metadata.name=x,spec.nodeName!=y` as (dotted path, operator, value) terms."""
    terms = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            path, value = part.split("!=", 1)
            terms.append((path.strip(), "!=", value.strip()))
        else:
            path, value = part.replace("==", "=").split("=", 1)
            terms.append((path.strip(), "=", value.strip()))
    return terms


def _matches(obj: dict[str, Any], labels: list[tuple[str, str, set[str]]], fields: list[tuple[str, str, str]]) -> bool:
    present = obj.get("metadata", {}).get("labels") or {}
    for key, operator, values in labels:
        value = present.get(key)
        if operator == "exists" and key not in present:
            return False
        if operator == "!exists" and key in present:
            return False
        if operator in ("=", "in") and value not in values:
            return False
        if operator in ("!=", "notin") and value in values:
            return False
    for path, operator, expected in fields:
        found: Any = obj
        for step in path.split("."):
            found = found.get(step) if isinstance(found, dict) else None
        actual = "" if found is None else str(found)
        if (actual == expected) != (operator == "="):
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
