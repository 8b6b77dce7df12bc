"""An S3 endpoint on loopback (moto in server mode) with one bucket: the storage production's registries share.

Production runs each front replica beside a registry of its own, every registry on one bucket; the tests
and the replica benchmark do the same with `RegistryServer(storage=s3.storage())`. moto is a test extra
(`pip install 'moto[server]'`), started as a subprocess, never imported here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import urllib3

from webhook.testing.processes import free_port, stop, wait_for_port

ACCESS_KEY, SECRET_KEY = "ccr-test-access", "ccr-test-secret"  # moto checks neither; the driver needs some
REGION = "us-east-1"


class S3Server:
    """One moto S3 server on 127.0.0.1 with the bucket `bucket`, made at start."""

    def __init__(self, bucket: str = "ccr") -> None:
        self.bucket = bucket
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="ccr-s3-"))
        self.log_path = self.workdir / "moto.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        """Start moto, wait until it listens, and make the bucket."""
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            wait_for_port(self.port, self.process, timeout=30)
            made = urllib3.request("PUT", f"{self.url}/{self.bucket}", retries=False, timeout=10)
        except (RuntimeError, TimeoutError, urllib3.exceptions.HTTPError) as err:
            self.cleanup()
            raise RuntimeError(f"moto S3 server: {err} (is moto[server] installed?)") from None
        if made.status != 200:
            self.cleanup()
            raise RuntimeError(f"moto S3 server: making bucket {self.bucket} answered {made.status}")
        return self

    def storage(self, rootdirectory: str = "/ccr", redirect: bool = False) -> dict[str, Any]:
        """A registry's `storage:` section on this bucket (`redirect`: blobs answered 307 to a presigned URL)."""
        return {
            "s3": {
                "accesskey": ACCESS_KEY,
                "secretkey": SECRET_KEY,
                "region": REGION,
                "regionendpoint": self.url,
                "bucket": self.bucket,
                "rootdirectory": rootdirectory,
                "forcepathstyle": True,
                "secure": False,
                "v4auth": True,
            },
            "redirect": {"disable": not redirect},
        }

    def objects(self, prefix: str = "") -> list[str]:
        """The bucket's object keys under `prefix` (first 1,000), to see what the registries wrote."""
        answer = urllib3.request("GET", f"{self.url}/{self.bucket}?list-type=2&prefix={prefix}", timeout=10)
        text = answer.data.decode()
        return [part.split("</Key>", 1)[0] for part in text.split("<Key>")[1:]]

    def cleanup(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
