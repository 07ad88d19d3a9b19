"""`fer-mtl pipeline submit` credentials against a fake, authenticating KFP API server on loopback.

The fake answers the calls `kfp.Client.create_run_from_pipeline_package` makes (healthz, list and
create experiment, create run) and, like the proxy in front of a multi-user Kubeflow, answers 401
to a request without the expected bearer token or session cookie.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fer_cli import main

TOKEN = "tok-3f9a1c-never-print-me"
COOKIE = "authservice_session=sess-77b2e-never-print-me"
SECRETS = (TOKEN, "sess-77b2e-never-print-me")


class FakeKfp(ThreadingHTTPServer):
    """Accepts requests carrying `expected` (header name -> value) and records every request."""

    def __init__(self, expected: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.expected = expected
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.runs: list[dict[str, Any]] = []
        self.forbid_runs = False  # a profile without RBAC for this user: reads pass, creating a run is 403

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeKfp

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        if any(self.headers.get(name) != value for name, value in self.server.expected.items()):
            return self._send(401, {"error": "unauthenticated", "code": 16})
        path = self.path.split("?")[0]
        if method == "GET" and path == "/apis/v2beta1/healthz":
            return self._send(200, {"multi_user": False})
        if method == "GET" and path == "/apis/v2beta1/experiments":
            return self._send(200, {"experiments": [{"experiment_id": "exp-1", "display_name": "fer-mtl"}]})
        if method == "POST" and path == "/apis/v2beta1/runs" and self.server.forbid_runs:
            return self._send(403, {"error": "user is not authorized to create runs in the namespace", "code": 7})
        if method == "POST" and path == "/apis/v2beta1/runs":
            self.server.runs.append(body)
            return self._send(200, {"run_id": "run-42", "display_name": body.get("display_name")})
        return self._send(404, {"error": f"no {method} {path}"})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")


@pytest.fixture()
def serve() -> Iterator[Any]:
    """Start a FakeKfp expecting the given headers; every server is shut down after the test."""
    servers: list[FakeKfp] = []

    def start(expected: dict[str, str]) -> FakeKfp:
        server = FakeKfp(expected)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.runner import compile_to

    return compile_to(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")[0]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import kfp

    for name in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_COOKIE", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    # kfp.Client reads a saved namespace from the user's home; keep this machine's out of the test.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    caplog.set_level(logging.DEBUG)


def _submit(server: FakeKfp, package: Path, *extra: str) -> int:
    return main([
        "pipeline", "submit", "--host", server.url, "--package", str(package),
        "-p", "tuning_storage=postgresql://optuna@db:5432/optuna", *extra,
    ])


def _assert_no_secret(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out and secret not in err and secret not in caplog.text
    return err.strip()


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("flag", {"Authorization": f"Bearer {TOKEN}"}),
        ("env", {"Authorization": f"Bearer {TOKEN}"}),
        ("cookie", {"Cookie": COOKIE}),
    ],
)
def test_each_credential_reaches_every_api_call(
    how: str, expected: dict[str, str], serve: Any, package: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(expected)
    extra = {"flag": ["--token", TOKEN], "env": [], "cookie": ["--cookie", COOKIE]}[how]
    if how == "env":
        monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    assert _submit(server, package, *extra) == 0
    assert [r["experiment_id"] for r in server.runs] == ["exp-1"]
    calls = [(method, path.split("?")[0]) for method, path, _ in server.seen]
    assert ("POST", "/apis/v2beta1/runs") in calls
    name, value = next(iter(expected.items()))
    assert all(headers.get(name.lower()) == value for _, _, headers in server.seen)
    _assert_no_secret(capsys, caplog)


def test_service_account_token_file_is_sent(
    serve: Any, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = serve({"Authorization": f"Bearer {TOKEN}"})
    assert _submit(server, package, "--sa-token", str(token_file)) == 0
    assert len(server.runs) == 1
    _assert_no_secret(capsys, caplog)


def test_sa_token_without_a_path_uses_kfps_path_variable(
    serve: Any, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_file = tmp_path / "projected-token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    server = serve({"Authorization": f"Bearer {TOKEN}"})
    assert _submit(server, package, "--sa-token") == 0
    assert len(server.runs) == 1


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ([], "asks for credentials: HTTP 401"),
        (["--token", "wrong-" + TOKEN], "refused the bearer token from --token (wrong or expired?): HTTP 401"),
        (["--cookie", "authservice_session=stale-" + SECRETS[1]],
         "refused the session cookie 'authservice_session' (wrong or expired?): HTTP 401"),
    ],
)
def test_missing_or_wrong_credentials_fail_in_one_line_without_the_secret(
    extra: list[str], named: str, serve: Any, package: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve({"Authorization": f"Bearer {TOKEN}"})
    assert _submit(server, package, *extra) == 2
    err = _assert_no_secret(capsys, caplog)
    assert "\n" not in err and named in err
    assert not server.runs


def test_a_run_the_profile_forbids_names_the_credential_not_its_value(
    serve: Any, package: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve({"Authorization": f"Bearer {TOKEN}"})
    server.forbid_runs = True
    assert _submit(server, package, "--token", TOKEN, "--namespace", "team-a") == 2
    err = _assert_no_secret(capsys, caplog)
    assert "refused the run: HTTP 403" in err and "with the bearer token from --token" in err and "\n" not in err


def test_missing_service_account_token_file_is_named(
    serve: Any, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    server = serve({})
    missing = tmp_path / "nope" / "token"
    assert _submit(server, package, "--sa-token", str(missing)) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot read the service-account token file {missing}" in err and "\n" not in err
    assert not server.seen  # refused before any request


def test_token_and_service_account_token_are_exclusive(
    serve: Any, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve({})
    assert _submit(server, package, "--token", TOKEN, "--sa-token", str(tmp_path / "t")) == 2
    err = _assert_no_secret(capsys, caplog)
    assert "pass one of them" in err and not server.seen


def test_credentials_never_show_in_repr() -> None:
    from pipelines.kfp_auth import KfpCredentials

    text = repr(KfpCredentials(token=TOKEN, cookie=COOKIE))
    assert all(secret not in text for secret in SECRETS)


def test_a_login_redirect_is_reported_as_missing_credentials(
    package: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # what oauth2-proxy/Dex answer a client without a session
            self.send_response(302)
            self.send_header("Location", "/dex/auth?client_id=kubeflow-oidc-authservice")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rc = main([
            "pipeline", "submit", "--host", f"http://127.0.0.1:{server.server_address[1]}", "--package", str(package),
            "-p", "tuning_storage=postgresql://optuna@db:5432/optuna",
        ])
    finally:
        server.shutdown()
        server.server_close()
    assert rc == 2
    assert "asks for credentials: redirected to /dex/auth" in capsys.readouterr().err



def test_submitted_run_carries_the_sources_fingerprint(serve: Any, package: Path, tmp_path: Path) -> None:
    """New data at the same location reaches the cluster as a new prepare input (a new cache key)."""
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n")
    server = serve({"Authorization": f"Bearer {TOKEN}"})

    def submitted_fingerprint() -> str:
        assert _submit(server, package, "--token", TOKEN, "-p", f"sources=fer2013-csv:{csv}") == 0
        return str(server.runs[-1]["runtime_config"]["parameters"]["sources_fingerprint"])

    first = submitted_fingerprint()
    assert first.startswith("sha256:") and submitted_fingerprint() == first
    csv.write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    assert submitted_fingerprint() != first
