"""Endpoint URLs and secrets from the environment, checked against SSRF before anything is sent.

HTTPS is required except for loopback; private, link-local, reserved and cloud-metadata
addresses are refused unless the endpoint says `allow_private: true`. URLs and secrets are kept
as `SecretStr`; logs and metrics name an endpoint by its name (and `label`: scheme://host).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from sinks.webhooks.errors import AlertsConfigError, UnsafeEndpoint
from sinks.webhooks.routing import AlertsConfig, EndpointSpec

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
Resolver = Callable[[str], list[str]]


def _resolve(host: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except OSError:
        return []


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A configured endpoint with its URL and signing secrets (the first secret is current)."""

    spec: EndpointSpec
    url: SecretStr
    secrets: tuple[SecretStr, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        """scheme://host:port only: never the path or query, where tokens live."""
        parts = urlsplit(self.url.get_secret_value())
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def check_url(name: str, url: str, allow_private: bool, resolve: Resolver = _resolve) -> None:
    """Raise UnsafeEndpoint unless `url` may receive alerts (see the module docstring)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise UnsafeEndpoint(
            f"endpoint {name}: the URL must be http(s)://host/..., check its value"
        )
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        resolved = resolve(host)
        if not resolved:
            raise UnsafeEndpoint(
                f"endpoint {name}: host {host} does not resolve; check the URL"
            ) from None
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolved]
    loopback = all(a.is_loopback for a in addresses)
    if parts.scheme != "https" and not loopback:
        raise UnsafeEndpoint(f"endpoint {name}: HTTPS is required except for loopback addresses")
    if loopback:
        return
    for address in addresses:
        bad = (
            address in METADATA_ADDRESSES
            or address.is_private
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        )
        if bad and not allow_private:
            raise UnsafeEndpoint(
                f"endpoint {name}: {host} is a private, link-local or metadata address; set "
                f"alerts.endpoints.{name}.allow_private: true if this is intended"
            )


def _secrets(name: str, variable: str, environ: Mapping[str, str]) -> tuple[SecretStr, ...]:
    value = environ.get(variable, "")
    items = [s for s in value.replace(",", " ").split() if s]
    if not items:
        raise AlertsConfigError(
            f"alerts.endpoints.{name}.secrets_env: environment variable {variable} is not set; "
            "give it one or more whsec_ secrets (space-separated, the current one first)"
        )
    for i, item in enumerate(items):
        if not item.startswith("whsec_"):
            raise AlertsConfigError(
                f"alerts.endpoints.{name}.secrets_env: secret #{i + 1} in {variable} does not "
                "start with whsec_"
            )
    return tuple(SecretStr(s) for s in items)


def resolve_endpoint(
    spec: EndpointSpec, environ: Mapping[str, str], resolve: Resolver = _resolve
) -> Endpoint:
    """The endpoint with its URL and secrets taken from `environ`, checked."""
    if spec.url_env is not None:
        url = environ.get(spec.url_env, "")
        if not url:
            raise AlertsConfigError(
                f"alerts.endpoints.{spec.name}.url_env: environment variable {spec.url_env} is "
                "not set; export the webhook URL there (or remove the endpoint)"
            )
    else:
        url = str(spec.url)
    check_url(spec.name, url, spec.allow_private, resolve)
    secrets = _secrets(spec.name, spec.secrets_env, environ) if spec.secrets_env else ()
    return Endpoint(spec, SecretStr(url), secrets)


def resolve_endpoints(
    config: AlertsConfig, environ: Mapping[str, str], resolve: Resolver = _resolve
) -> dict[str, Endpoint]:
    """Every configured endpoint resolved (the first problem raises, naming the key)."""
    return {
        name: resolve_endpoint(spec, environ, resolve) for name, spec in config.endpoints.items()
    }
