"""Credentials in URLs: split off at planning, carried by the environment, sent as the URL
meant them, and masked wherever text is written."""

from __future__ import annotations

import json
import logging

import pytest

from cosmopedia import plan, redact
from cosmopedia.generation import engines
from cosmopedia.settings import validate_config
from threaded_dummy import ThreadedDummy

BASE = {
    "dataset": {"name": "t", "version": "v0"},
    "sources": {"s": {"family": "wikihow", "files": "x"}},
}


def config_with(generation: dict) -> dict:
    return validate_config({**BASE, "generation": generation})


def test_split_url_keeps_everything_but_the_credentials():
    c = redact.split_url("https://us%3Aer:p%40ss:w@host:8080/v1/?tenant=a%20b&api_key=K%2B1&x=2")
    assert c.url == "https://host:8080/v1/?tenant=a%20b&x=2"
    assert (c.username, c.password) == ("us:er", "p@ss:w")
    assert c.query == (("api_key", "K+1"),)
    assert redact.UrlCredentials.from_env_value(c.to_json()) == c
    assert not redact.split_url("http://host/?tenant=a")
    assert redact.split_url("http://host/?tenant=a").url == "http://host/?tenant=a"
    for name in ("token", "access_token", "sig", "X-Amz-Signature", "apikey", "password"):
        assert redact.split_url(f"http://h/?{name}=s&a=1").url == "http://h/?a=1"


def test_planning_moves_the_credentials_to_the_environment():
    url = "http://cosmo:pw-123456789@127.0.0.1:9/?api_key=key-123456789&tenant=t"
    config = config_with({"engine": "endpoint", "endpoint_url": url})
    environ = {}
    assert plan.move_endpoint_credentials(config, environ)
    assert config["generation"]["endpoint_url"] == "http://127.0.0.1:9/?tenant=t"
    # Every setting built from the config is clean: the job's, the compared param's.
    settings_json = json.dumps(plan.generate_request(config)) + str(plan.generate_job(config))
    assert "pw-123456789" not in settings_json and "key-123456789" not in settings_json
    access = redact.endpoint_access(config["generation"]["endpoint_url"], environ)
    assert access.base_url == "http://127.0.0.1:9"
    assert access.params == (("tenant", "t"), ("api_key", "key-123456789"))
    assert access.basic_auth == ("cosmo", "pw-123456789")
    # Bound to the URL: another endpoint does not get them.
    assert redact.endpoint_access("http://elsewhere:9/?tenant=t", environ).basic_auth is None
    # No credentials: nothing moves.
    plain = config_with({"endpoint_url": "http://h/"})
    assert not plan.move_endpoint_credentials(plain, environ := {}) and environ == {}


def test_credentials_are_secrets_wherever_text_is_written(monkeypatch):
    url = "https://cosmo:pw-123456789@h/?api_key=key-123456789"
    monkeypatch.setenv(redact.ENDPOINT_CREDENTIALS_VAR, redact.split_url(url).to_json())
    assert redact.text("failed: pw-123456789 and key-123456789") == "failed: *** and ***"
    assert redact.text(f"GET {url}") == "GET https://***@h/?api_key=***"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "to %s", (url,), None)
    assert redact.Formatter("%(message)s").format(record) == "to https://***@h/?api_key=***"
    # Set by hand as the URL with its credentials: the same.
    monkeypatch.setenv(redact.ENDPOINT_CREDENTIALS_VAR, url)
    assert "pw-123456789" in redact.secret_values()
    assert redact.endpoint_access("https://h/").basic_auth == ("cosmo", "pw-123456789")


@pytest.mark.parametrize("userinfo", [True, False])
def test_the_endpoint_probes_with_the_query_and_the_credentials(monkeypatch, userinfo):
    """/health and /info with the URL's query parameters (not appended after them), Basic
    auth from the userinfo, else the bearer COSMOPEDIA_ENDPOINT_TOKEN."""
    monkeypatch.setenv(redact.ENDPOINT_TOKEN_VAR, "bearer-123456789")
    with ThreadedDummy() as dummy:
        auth = "cosmo:pw-123456789@" if userinfo else ""
        url = f"http://{auth}127.0.0.1:{dummy.port}/?api_key=key-123456789&tenant=t"
        config = config_with({"engine": "endpoint", "endpoint_url": url})
        plan.move_endpoint_credentials(config, environ := {})
        monkeypatch.setenv(
            redact.ENDPOINT_CREDENTIALS_VAR, environ[redact.ENDPOINT_CREDENTIALS_VAR]
        )
        job = plan.generate_job(config)
        engine = engines.engine_for(job.generation)
        info = engine.probe(engine.access(), 5)
    assert info["engine"] == "dummy"
    assert [r.path for r in dummy.received] == ["/health", "/info"]
    expected = "Basic Y29zbW86cHctMTIzNDU2Nzg5" if userinfo else "Bearer bearer-123456789"
    for r in dummy.received:
        assert dict(r.query) == {"api_key": "key-123456789", "tenant": "t"}
        assert r.authorization == expected
