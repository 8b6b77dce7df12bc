"""`ccr-webhook serve` options put over the configuration file, and the errors they can make."""

import pytest

from webhook.cli import build_parser
from webhook.commands.serve import with_command_line
from webhook.config import ConfigError, parse_config

CONFIG = parse_config({"ccr": {"registry": "ccr.local:5000"}, "webhook": {"tlsCert": "a.crt", "tlsKey": "a.key"}})


def args(*argv):
    return build_parser().parse_args(["serve", "--config", "c.yaml", *argv])


def test_command_line_overrides_the_file():
    webhook = with_command_line(
        CONFIG, args("--listen", "127.0.0.1:9443", "--workers", "3", "--tls-cert", "b.crt", "--tls-key", "b.key")
    ).webhook
    assert (webhook.listen, webhook.workers, webhook.tls_cert, webhook.tls_key) == (
        "127.0.0.1:9443",
        3,
        "b.crt",
        "b.key",
    )


def test_the_file_stands_where_the_command_line_is_silent():
    assert with_command_line(CONFIG, args()) == CONFIG


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert", "b.crt"], "--tls-cert and --tls-key go together"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_options_are_configuration_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        with_command_line(CONFIG, args(*argv))
