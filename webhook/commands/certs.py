"""`ccr-webhook certs`: make certificates by hand, keep them valid in the cluster, look at them.

ccr-webhook certs generate --out DIR [--service S --namespace N] [--dns NAME]... [--ip ADDR]...
ccr-webhook certs bootstrap [--namespace N --secret S --service S --webhook-configuration C]
                            [--write-dir DIR] [--watch [--interval SECONDS]] [--kubeconfig FILE]
ccr-webhook certs inspect FILE [--ca FILE] [--host HOST]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
from pathlib import Path
from typing import Any

from webhook import tls
from webhook.commands import UsageError, positive_int, read_input, stop_on_signals
from webhook.kube.client import kubernetes_client
from webhook.logs import setup_logging


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="TLS certificates: generate, bootstrap in the cluster, inspect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="certs_command", required=True, metavar="ACTION")

    generate = actions.add_parser("generate", help="write a CA and a serving certificate to a directory")
    _add_names(generate)
    generate.add_argument("--out", required=True, type=Path, help="directory for ca.crt, ca.key, tls.crt, tls.key")
    generate.add_argument("--days", type=positive_int, default=365, help="serving certificate lifetime (default 365)")
    generate.add_argument("--ca-days", type=positive_int, default=3650, help="CA lifetime (default 3650)")
    existing = generate.add_mutually_exclusive_group()
    existing.add_argument(
        "--reuse-ca", action="store_true", help="sign with the ca.crt/ca.key already in --out instead of a new CA"
    )
    existing.add_argument(
        "--force", action="store_true", help="replace a CA already in --out (what trusted the old one stops trusting)"
    )
    generate.set_defaults(func=run, certs_action=_generate)

    bootstrap = actions.add_parser("bootstrap", help="create or renew the TLS Secret and set the webhooks' caBundle")
    _add_names(bootstrap)
    bootstrap.add_argument("--secret", default="ccr-webhook-tls", help="the TLS Secret (default ccr-webhook-tls)")
    bootstrap.add_argument(
        "--webhook-configuration",
        action="append",
        dest="configurations",
        metavar="NAME",
        help="MutatingWebhookConfiguration to set caBundle on (repeatable; default ccr-webhook)",
    )
    bootstrap.add_argument(
        "--serving-days",
        type=positive_int,
        default=90,
        help="serving certificate lifetime; renewed with a third left (default 90)",
    )
    bootstrap.add_argument("--write-dir", help="also write tls.crt, tls.key, ca.crt here for the server to load")
    bootstrap.add_argument("--watch", action="store_true", help="keep running: check again every --interval seconds")
    bootstrap.add_argument(
        "--interval", type=float, default=300.0, help="seconds between checks with --watch (default 300)"
    )
    bootstrap.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster service account, then $KUBECONFIG)"
    )
    bootstrap.set_defaults(func=run, certs_action=_bootstrap)

    inspect = actions.add_parser("inspect", help="show a certificate's names and validity; verify it against a CA")
    inspect.add_argument("cert", type=Path, help="PEM certificate file")
    inspect.add_argument("--ca", type=Path, help="CA bundle to verify against")
    inspect.add_argument("--host", help="name or address the certificate must be valid for (with --ca)")
    inspect.add_argument(
        "--warn-days", type=int, default=30, help="exit 1 if it expires within this many days (default 30)"
    )
    inspect.set_defaults(func=run, certs_action=_inspect)


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", default="ccr-webhook", help="the webhook's Service (default ccr-webhook)")
    parser.add_argument("--namespace", default="ccr-system", help="its namespace (default ccr-system)")
    parser.add_argument(
        "--cluster-domain", default="cluster.local", help="the cluster DNS domain (default cluster.local)"
    )
    parser.add_argument(
        "--dns", action="append", default=[], metavar="NAME", help="another DNS name for the certificate (repeatable)"
    )
    parser.add_argument(
        "--ip",
        action="append",
        type=_ip_address,
        default=[],
        metavar="ADDR",
        help="an IP address for the certificate (repeatable)",
    )


def _ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, for argparse."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r} (give a name with --dns)") from None


def run(args: argparse.Namespace) -> int:
    return args.certs_action(args)


def _dns_names(args: argparse.Namespace) -> list[str]:
    return tls.service_dns_names(args.service, args.namespace, args.cluster_domain) + list(args.dns)


def _generate(args: argparse.Namespace) -> int:
    out: Path = args.out
    if args.reuse_ca:
        hint = " (run without --reuse-ca to create a CA there)"
        ca = tls.KeyPair(read_input(out / "ca.crt", "the CA", hint), read_input(out / "ca.key", "the CA key", hint))
        tls.describe_certificate(ca.cert_pem)  # not a certificate: CertificateError, one line
    else:
        if (out / "ca.key").exists() and not args.force:
            raise UsageError(
                f"{out / 'ca.key'} exists and is not replaced: pass --reuse-ca to sign with it, "
                "or --force to make a new CA (whoever trusts the old one, such as a caBundle, stops trusting)"
            )
        _make_directory(out)
        ca = tls.generate_ca(days=args.ca_days)
        ca.write(out / "ca.crt", out / "ca.key")
    serving = tls.issue_serving_cert(ca, _dns_names(args), args.ip, days=args.days)
    serving.write(out / "tls.crt", out / "tls.key")
    info = tls.describe_certificate(serving.cert_pem)
    print(
        f"wrote {out}/ca.crt, ca.key, tls.crt, tls.key; valid until {info.not_after:%Y-%m-%d} "
        f"for {', '.join(info.dns_names + info.ip_addresses)}"
    )
    return 0


def _make_directory(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create --out {out}: {err.strerror or err}") from None


def _bootstrap(args: argparse.Namespace) -> int:
    setup_logging()
    settings = tls.BootstrapSettings(
        namespace=args.namespace,
        secret=args.secret,
        service=args.service,
        webhook_configurations=tuple(args.configurations or ("ccr-webhook",)),
        extra_dns_names=tuple(args.dns),
        ip_addresses=tuple(args.ip),
        cluster_domain=args.cluster_domain,
        policy=tls.RenewalPolicy(serving_days=args.serving_days),
        write_dir=args.write_dir,
    )
    api_client = kubernetes_client(args.kubeconfig)
    if not args.watch:
        result = tls.bootstrap_certificates(api_client, settings)
        _report(result)
        if result.missing:
            print(f"ccr-webhook: webhook configuration(s) not found: {', '.join(result.missing)}", file=sys.stderr)
            return 1
        return 0
    stop = stop_on_signals()
    tls.run_certificate_bootstrap(api_client, settings, stop, args.interval, on_pass=_report)
    return 0


def _report(result: tls.BootstrapResult) -> None:
    info = tls.describe_certificate(result.material.serving.cert_pem)
    why = f" ({result.reason})" if result.reason else ""
    patched = f"; caBundle set on {', '.join(result.patched)}" if result.patched else ""
    print(
        f"secret {result.secret}{why}; serving certificate valid until {info.not_after:%Y-%m-%dT%H:%M:%SZ}{patched}",
        flush=True,
    )


def _inspect(args: argparse.Namespace) -> int:
    pem = read_input(args.cert, "the certificate")
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise UsageError(f"{args.cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----): is it a key?")
    info = tls.describe_certificate(pem)
    now = datetime.datetime.now(datetime.UTC)
    print(f"subject:   {info.subject}")
    print(f"issuer:    {info.issuer}")
    print(f"valid:     {info.not_before:%Y-%m-%dT%H:%M:%SZ} .. {info.not_after:%Y-%m-%dT%H:%M:%SZ}")
    print(f"dns names: {', '.join(info.dns_names) or '(none)'}")
    print(f"addresses: {', '.join(info.ip_addresses) or '(none)'}")
    status = 0
    if args.ca is not None:
        host = args.host or (info.dns_names + info.ip_addresses + ("",))[0]
        try:
            tls.verify_serving_certificate(read_input(args.ca, "the CA bundle"), pem, host, now)
            print(f"verified:  chains to {args.ca} and is valid for {host}")
        except tls.CertificateError as err:
            print(f"NOT VALID: {err}")
            status = 1
    left = info.not_after - now
    if left < datetime.timedelta(days=args.warn_days):
        print(f"EXPIRING:  {max(left.days, 0)} days left")
        status = 1
    return status
