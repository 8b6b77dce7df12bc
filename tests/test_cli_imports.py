"""Building the CLI loads no metrics library: `serve` sets PROMETHEUS_MULTIPROC_DIR before prometheus_client loads."""

import subprocess
import sys


def test_building_the_parser_of_every_command_does_not_import_prometheus_client():
    code = "import sys; from webhook.cli import build_parser; build_parser(); print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", "a command module imports prometheus_client at import time"
