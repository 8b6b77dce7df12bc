"""The node agent: keeps containerd's `hosts.toml` and CA for the CCR current on its node, and says when it cannot.

Every `nodes.intervalSeconds` one pass (`sync`): check that containerd reads `configPath` (its main config,
read-only; never edited), find the address nodes dial (the CCR Service's ClusterIP, read from the API, and the
port of `ccr.registry`), take the CA (`ccr.caFile`, a mounted Secret key; a replaced CA stays trusted for
`caOverlapSeconds`), write both atomically, then dial the front exactly as containerd will (that address, that
CA, the address as the name to verify). A certificate that does not name the dialed address, or a node whose
containerd has no `config_path`, makes the agent not ready and posts an Event on the Node, before any Pod meets
it. A front that does not answer is no fault of the node: pulls go to the fallback meanwhile, and the agent
stays ready. On SIGTERM it removes what it wrote when its DaemonSet is being deleted (not for a rollout).
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.config import Config
from webhook.kube.informer import Informer
from webhook.node.hosts import (
    CA_FILE,
    HOSTS_FILE,
    NodeFiles,
    TrustedCAs,
    certificates,
    containerd_config_paths,
    render_hosts_toml,
)
from webhook.node.metrics import NodeMetrics
from webhook.registry.auth import load_credentials
from webhook.registry.errors import RegistryError

log = logging.getLogger("webhook.node")
DIAL_TIMEOUT_SECONDS = 5.0
MIN_PASS_SECONDS = 1.0
STOP_CHECK_SECONDS = 0.5  # how soon a waiting agent notices stop
EVENT_COMPONENT = "ccr-webhook-node-agent"
MAX_EVENT_MESSAGE = 1024


@dataclass(frozen=True)
class Status:
    """How the last pass ended: ready or not, a short reason (an Event's reason) and what an operator should know."""

    ready: bool
    reason: str
    message: str
    front_reachable: bool = False


class NodeAgent:
    """One node's agent: `sync` is one pass, `run` repeats it until stopped, then removes what it wrote."""

    def __init__(self, config: Config, metrics: NodeMetrics, api_client: Any | None) -> None:
        self.config = config
        self.settings = config.nodes
        self.metrics = metrics
        self.files = NodeFiles(self.settings.host_dir, config.ccr.registry)
        self.cas = TrustedCAs(datetime.timedelta(seconds=self.settings.ca_overlap_seconds))
        # What an agent before this one trusted: a CA replaced during a rotation stays trusted after a restart.
        self.cas.update(self.files.read(CA_FILE), datetime.datetime.now(datetime.UTC))
        self.status = Status(False, "Starting", "the first pass has not run yet")
        self._api = api_client
        self._address: str | None = None  # the last address the API gave
        self._address_problem = "no address for the front yet"
        self.wake = threading.Event()  # set to run the next pass now (the CA changed)
        self.ca_watch = CAWatch(self.settings.ca_config_map, self.wake) if self.settings.ca_config_map else None

    @property
    def tls(self) -> bool:
        """Whether nodes reach the front over TLS (the CCR is not `insecure`)."""
        return not self.config.ccr.insecure

    def sync(self, now: datetime.datetime | None = None) -> Status:
        """One pass: check, write what changed, dial the front; the Status (also kept in `status`)."""
        status = self._sync(now or datetime.datetime.now(datetime.UTC))
        if (status.ready, status.reason) != (self.status.ready, self.status.reason):
            (log.info if status.ready else log.warning)("node agent %s: %s", status.reason, status.message)
            self._post_event(status)
        self.status = status
        self.metrics.ready.set(1 if status.ready else 0)
        return status

    def _sync(self, now: datetime.datetime) -> Status:
        problem = self._config_path_problem()
        if problem is not None:
            return Status(False, "CCRNoConfigPath", problem)
        address = self._front_address()
        if address is None:
            return Status(False, "CCRServiceUnknown", self._address_problem)
        ca_path = None
        if self.tls:
            pem, source = self._ca()
            if not certificates(pem):  # keep trusting what was trusted; write nothing new
                return Status(False, "CCRCAUnreadable", f"the CCR's CA ({source}) holds no PEM certificate")
            self.cas.update(pem, now)
            if self.files.write(CA_FILE, self.cas.bundle()):
                self.metrics.writes.labels(CA_FILE).inc()
            ca_path = f"{self.settings.config_path}/{self.config.ccr.registry}/{CA_FILE}"
        try:
            authorization = self._authorization()
        except RegistryError as err:
            return Status(False, "CCRPullAccountUnreadable", str(err))
        fallback = f"http://{self.settings.fallback_listen}" if self.settings.fallback_listen else None
        front_url = f"{'https' if self.tls else 'http'}://{address}"
        if self.files.write(HOSTS_FILE, render_hosts_toml(front_url, ca_path, fallback, authorization)):
            self.metrics.writes.labels(HOSTS_FILE).inc()
        return self._dial(address)

    def _ca(self) -> tuple[str, str]:
        """The CCR's CA as PEM text ('' when unreadable), and where it comes from."""
        if self.ca_watch is not None:
            return self.ca_watch.pem, f"ConfigMap {self.settings.event_namespace}/{self.ca_watch.name}, key ca.crt"
        try:
            return Path(self.config.ccr.ca_file or "").read_text(), "ccr.caFile"
        except OSError as err:
            return "", f"ccr.caFile, unreadable: {err.strerror}"

    def _config_path_problem(self) -> str | None:
        """Why containerd on this node would not read what the agent writes, or None."""
        path = self.settings.containerd_config
        if path is None:
            return None
        try:
            paths = containerd_config_paths(Path(path).read_text())
        except FileNotFoundError:
            paths = None  # containerd runs on its defaults, which set no config_path
        except (OSError, ValueError) as err:
            return f"cannot read containerd's config {path}: {err}; nothing written"
        wanted = self.settings.config_path.rstrip("/")
        if paths is None or wanted not in {found.rstrip("/") for found in paths}:
            named = ", ".join(paths) if paths else "none"
            return (
                f"containerd on this node does not read {wanted} (its registry config_path: {named}), so it cannot "
                f"reach the CCR through the node agent; nothing written. Set config_path = {wanted!r} in containerd's "
                "CRI registry configuration (docs/install.md) and restart containerd once"
            )
        return None

    def _front_address(self) -> str | None:
        """`host:port` of the front as nodes dial it: configured, or the Service's ClusterIP (last known if the
        API does not answer now)."""
        if self.settings.front_address is not None:
            return self.settings.front_address
        name, namespace = self.settings.service, self.settings.service_namespace
        try:
            from kubernetes.client import CoreV1Api
            from kubernetes.client.exceptions import ApiException

            try:
                service = CoreV1Api(self._api).read_namespaced_service(name, namespace)
            except ApiException as err:
                self._address_problem = f"cannot read Service {namespace}/{name}: {err.status} {err.reason}"
                return self._address
            cluster_ip = service.spec.cluster_ip if service.spec is not None else None
        except (OSError, ValueError) as err:
            self._address_problem = f"cannot read Service {namespace}/{name}: {err}"
            return self._address
        if not cluster_ip or cluster_ip == "None":
            self._address_problem = f"Service {namespace}/{name} has no ClusterIP"
            return None
        port = self.config.ccr.registry.rpartition(":")[2] if ":" in self.config.ccr.registry else "443"
        host = f"[{cluster_ip}]" if ":" in cluster_ip else cluster_ip
        self._address = f"{host}:{port}"
        return self._address

    def _authorization(self) -> str | None:
        """The pull account's Authorization header for the front, or None without `pullCredentials`."""
        path = self.settings.pull_credentials
        if path is None:
            return None
        return load_credentials(path, self.config.ccr.registry).basic_header()

    def _dial(self, address: str) -> Status:
        """Connect to the front at `address` as containerd will, verifying its certificate by the CA written."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            with socket.create_connection((host, int(port)), timeout=DIAL_TIMEOUT_SECONDS) as connection:
                if self.tls:
                    context = ssl.create_default_context(cafile=str(self.files.directory / CA_FILE))
                    with context.wrap_socket(connection, server_hostname=host):
                        pass
        except ssl.SSLCertVerificationError as err:
            kind = "IP address" if _is_ip(host) else "name"
            return Status(
                False,
                "CCRCertificateMismatch",
                f"the CCR front at {address} does not verify as containerd dials it: {err.verify_message}. Its "
                f"certificate must name the {kind} {host} (an IP SAN for a ClusterIP) and be issued by the CCR's CA "
                "(certs/make-production-secrets.sh, `ccr-webhook certs generate --ip`)",
            )
        except (OSError, ssl.SSLError) as err:
            return Status(
                True,
                "CCRFrontUnreachable",
                f"hosts.toml written; the CCR front at {address} does not answer ({err}), so pulls use the "
                "node-local fallback (upstream, digest-verified) until it does",
            )
        return Status(True, "CCRNodeReady", f"containerd pulls {self.config.ccr.registry} through {address}", True)

    def _post_event(self, status: Status) -> None:
        """An Event on this Node for a change of state (nothing without a node name or an API client)."""
        node = self.settings.node_name
        if node is None or self._api is None:
            return
        from kubernetes.client import CoreV1Api

        now = datetime.datetime.now(datetime.UTC)
        event = {
            "metadata": {"generateName": f"{node}.ccr-node-agent.", "namespace": self.settings.event_namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
            "reason": status.reason,
            "message": status.message[:MAX_EVENT_MESSAGE],
            "type": "Normal" if status.ready else "Warning",
            "source": {"component": EVENT_COMPONENT, "host": node},
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        try:
            # A plain dict is sent as it is; the client's stubs only name its model class.
            CoreV1Api(self._api).create_namespaced_event(self.settings.event_namespace, event)  # type: ignore[arg-type]
        except Exception as err:  # an Event is best effort: the log and the metric carry the state anyway
            log.info("could not post the node Event %s: %s", status.reason, err)

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` (one every intervalSeconds, or at once when the CA changes); then remove what
        the agent wrote if it is being uninstalled."""
        informer = self._watch_ca()
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    self.sync()
                except Exception:
                    log.exception("a node agent pass failed; the next one tries again")
                self._pause(stop)
        finally:
            if informer is not None:
                informer.stop()
            if self.uninstalling():
                self.files.remove()
                log.info("uninstalled: removed %s", self.files.directory)
            else:
                log.info("stopping; %s stays for the next agent on this node", self.files.directory)

    def _pause(self, stop: threading.Event) -> None:
        """Until the next pass: intervalSeconds, or less when the CA changed (at least MIN_PASS_SECONDS), or stop."""
        if stop.wait(MIN_PASS_SECONDS):  # a CA that changes again and again costs at most one pass a second
            return
        deadline = time.monotonic() + self.settings.interval_seconds - MIN_PASS_SECONDS
        while not stop.is_set() and not self.wake.is_set() and (left := deadline - time.monotonic()) > 0:
            self.wake.wait(min(left, STOP_CHECK_SECONDS))

    def _watch_ca(self) -> Informer | None:
        """The ConfigMap informer feeding the CA watch, started (None without a CA ConfigMap or an API client)."""
        if self.ca_watch is None or self._api is None:
            return None
        from kubernetes.client import CoreV1Api

        listing = functools.partial(CoreV1Api(self._api).list_namespaced_config_map, self.settings.event_namespace)
        informer = Informer(listing, kind="ConfigMap", api_version="v1")
        informer.add_handler(self.ca_watch)
        return informer.start()

    def uninstalling(self) -> bool:
        """Whether the agent's DaemonSet is gone or being deleted (a rollout or a node shutdown keeps the files, so
        the node pulls on while no agent runs). Without an API client: True."""
        if self._api is None:
            return True
        from kubernetes.client import AppsV1Api
        from kubernetes.client.exceptions import ApiException

        name, namespace = self.settings.daemon_set, self.settings.event_namespace
        try:
            daemon_set = AppsV1Api(self._api).read_namespaced_daemon_set(name, namespace)
        except ApiException as err:
            return err.status == 404
        except (OSError, ValueError):  # the API is out of reach: keep the files, as a node shutdown would
            return False
        return daemon_set.metadata is not None and daemon_set.metadata.deletion_timestamp is not None


class CAWatch:
    """The `ca.crt` of one ConfigMap, kept current by the informer; a change wakes the agent's loop."""

    def __init__(self, name: str, wake: threading.Event) -> None:
        self.name, self.wake = name, wake
        self.pem = ""

    def listed(self, objects: list[dict[str, Any]]) -> None:
        found = [obj for obj in objects if obj.get("metadata", {}).get("name") == self.name]
        self._take(found[0] if found else None)

    def changed(self, event_type: str, obj: dict[str, Any]) -> None:
        if obj.get("metadata", {}).get("name") == self.name:
            self._take(None if event_type == "DELETED" else obj)

    def _take(self, configmap: dict[str, Any] | None) -> None:
        pem = str(((configmap or {}).get("data") or {}).get("ca.crt") or "")
        if pem != self.pem:
            self.pem = pem
            self.wake.set()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
