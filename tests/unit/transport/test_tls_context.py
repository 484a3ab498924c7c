"""The TLS context models verify DeepInfra's certificate with: built once per process, verification on."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest

from guidance_deepinfra import DeepInfra
from guidance_deepinfra.transport.client import _httpx_module, shared_tls_context

KEY = "test-key-0123456789"


def pool_context(lm: DeepInfra) -> ssl.SSLContext:
    """The context the model's HTTP connection pool wraps its sockets with."""
    return lm.transport._client._client._transport._pool._ssl_context  # type: ignore[attr-defined,no-any-return]


def test_models_share_one_verifying_tls_context() -> None:
    first = DeepInfra("org/model-a", api_key=KEY)
    second = DeepInfra("org/model-b", api_key=KEY, base_url="http://127.0.0.1:9/v1/openai")
    context = pool_context(first)
    assert context is pool_context(second) is shared_tls_context(_httpx_module())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_other_certificate_settings_get_their_own_context(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = shared_tls_context(_httpx_module())
    bundle = tmp_path / "bundle.pem"  # a certificate file of its own (a copy of certifi's bundle)
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    lm = DeepInfra("org/model-a", api_key=KEY)
    assert pool_context(lm) is not default
    assert pool_context(lm).verify_mode == ssl.CERT_REQUIRED
