"""cli/engine.py: a backend URL's password never reaches a message of ours (the engine quotes
PULUMI_BACKEND_URL in its errors, e.g. `unable to open state database "postgres://..."`)."""
from __future__ import annotations

import pytest

from cli import engine


@pytest.mark.parametrize("text, want", [
    ('error: unable to open state database "postgres://pulumi:s3cr:et@db:5432/pulumi?sslmode=require": '
     "failed to ping", 'error: unable to open state database "postgres://pulumi:****@db:5432/pulumi'
     '?sslmode=require": failed to ping'),
    ("s3://AKIA:wJal/rXUt@minio:9000/state", "s3://AKIA:****@minio:9000/state"),
    ("postgres://a:b@h/x and postgres://c:d@h/y", "postgres://a:****@h/x and postgres://c:****@h/y"),
])
def test_redacts_the_password_of_a_url(text, want):
    """user:password@ keeps the user and loses the password, wherever the URL sits in the text."""
    assert engine.redact_urls(text) == want


@pytest.mark.parametrize("text", [
    "postgres://pulumi@198.18.0.5:5432/pulumi?sslmode=verify-full&passfile=%2Froot%2F.pgpass",
    "file:///root/.pulumi-state",
    "https://198.18.0.11:6443/api",
    "s3://bucket?endpoint=minio:9000&region=us-east-1",
    "ssh root@198.18.0.11: connection refused",
])
def test_leaves_urls_without_a_password_alone(text):
    assert engine.redact_urls(text) == text


def test_first_error_line_and_backend_message_are_redacted(monkeypatch):
    """The line we show from engine output, and the backend we name, carry no password."""
    out = 'warning: x\nerror: unable to open state database "postgres://u:hunter2@db/p": refused\n'
    assert "hunter2" not in engine.first_error_line(out)
    assert engine.first_error_line(out).startswith('unable to open state database "postgres://u:****@db/p"')
    monkeypatch.setenv("PULUMI_BACKEND_URL", "postgres://u:hunter2@db/p")
    assert engine.backend_for_humans() == "postgres://u:****@db/p"
    monkeypatch.delenv("PULUMI_BACKEND_URL")
    assert engine.backend_for_humans() == "pulumi login"
