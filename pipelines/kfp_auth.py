"""Credentials for the Kubeflow Pipelines API: what `fer-mtl pipeline submit` hands to `kfp.Client`.

A multi-user Kubeflow puts an authenticating proxy (Dex/oauth2-proxy, Istio) in front of the API;
it accepts one of the three things `kfp.Client` can send:
- a bearer token (`existing_token`), e.g. `kubectl create token` or an OIDC id token;
- the projected service-account token of a pod in the cluster (`ServiceAccountTokenVolumeCredentials`,
  re-read from its file on every request, so kubelet rotations are picked up);
- a browser session cookie (`cookies`), e.g. Dex's `authservice_session=...`.
Secrets never appear in `repr`, logs or error messages: errors name where a secret came from
(flag, variable, file), never its value.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_model.errors import ConfigError

logger = logging.getLogger(__name__)

#: Environment variables read when the flags are not given (a flag shows up in `ps` and shell history).
TOKEN_ENV = "KF_PIPELINES_TOKEN"
COOKIE_ENV = "KF_PIPELINES_COOKIE"


@dataclass(frozen=True)
class KfpCredentials:
    """At most one of a bearer token and a service-account token file, plus an optional session cookie.

    Attributes:
        token: A bearer token sent as `Authorization: Bearer ...`.
        token_source: Where `token` came from ("--token", "$KF_PIPELINES_TOKEN"), for messages.
        sa_token_path: A projected service-account token file (kfp's default path when given as "").
        cookie: A `Cookie` header value such as `authservice_session=...`.
    """

    token: str | None = field(default=None, repr=False)
    token_source: str = "--token"
    sa_token_path: str | None = None
    cookie: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigError(f"the bearer token from {self.token_source} is empty; pass a token or leave it unset")
        if self.token and self.sa_token_path is not None:
            raise ConfigError(
                f"a bearer token ({self.token_source}) and --sa-token are both set; pass one of them "
                f"(unset ${TOKEN_ENV} to use the service-account token)"
            )
        if self.cookie is not None and "=" not in self.cookie:
            raise ConfigError("--cookie must look like NAME=VALUE, e.g. authservice_session=...; got no '='")

    @property
    def sa_token_file(self) -> Path | None:
        """The service-account token file `kfp` reads: the path given, else its own defaults."""
        if self.sa_token_path is None:
            return None
        from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH

        return Path(self.sa_token_path or os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH)

    def describe(self) -> str:
        """What is sent, without any secret: "bearer token from --token", "no credentials", ..."""
        parts = []
        if self.token:
            parts.append(f"the bearer token from {self.token_source}")
        if self.sa_token_file is not None:
            parts.append(f"the service-account token in {self.sa_token_file}")
        if self.cookie:
            parts.append(f"the session cookie {self.cookie.partition('=')[0]!r}")
        return " and ".join(parts) or "no credentials"

    def headers(self) -> dict[str, str]:
        """The HTTP headers these credentials add to a request (for the reachability probe)."""
        out = {}
        token = self.token or self._read_sa_token()
        if token:
            out["Authorization"] = f"Bearer {token}"
        if self.cookie:
            out["Cookie"] = self.cookie
        return out

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `kfp.Client`: existing_token, credentials, cookies."""
        out: dict[str, Any] = {}
        if self.token:
            out["existing_token"] = self.token
        if self.sa_token_file is not None:
            from kfp.client import ServiceAccountTokenVolumeCredentials

            self._read_sa_token()  # a missing file fails here with our message, not in kfp's log
            out["credentials"] = ServiceAccountTokenVolumeCredentials(path=str(self.sa_token_file))
        if self.cookie:
            out["cookies"] = self.cookie
        return out

    def _read_sa_token(self) -> str | None:
        path = self.sa_token_file
        if path is None:
            return None
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"cannot read the service-account token file {path} ({e.strerror or e}); inside a pod, project "
                "a token with audience pipelines.kubeflow.org there, or pass --sa-token PATH"
            ) from e
        if not token:
            raise ConfigError(f"the service-account token file {path} is empty")
        return token


def credentials_from(
    *, token: str | None, sa_token: str | None, cookie: str | None, environ: Any = os.environ
) -> KfpCredentials:
    """Credentials from the submit flags, falling back to $KF_PIPELINES_TOKEN and $KF_PIPELINES_COOKIE.

    `sa_token` is None when --sa-token is absent, "" for kfp's default token path.
    """
    source = "--token"
    if token is None and environ.get(TOKEN_ENV) and sa_token is None:
        token, source = environ[TOKEN_ENV], f"${TOKEN_ENV}"
    if cookie is None and environ.get(COOKIE_ENV):
        cookie = environ[COOKIE_ENV]
    return KfpCredentials(token=token, token_source=source, sa_token_path=sa_token, cookie=cookie)
