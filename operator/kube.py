"""The operator's own calls to the Kubernetes API: a small typed REST client.

kopf watches and patches the objects it handles; everything else the operator
does (apply Deployments, read Secrets, annotate pods, write Events and
``.status``) goes through :class:`Kube`, which speaks plain JSON over the
official client's connection handling (kubeconfig or in-cluster credentials,
client certificates, token refresh).  Bodies are dicts in and dicts out, never
the generated models, so the code reads like the YAML people know.

The official client is synchronous; each call runs in a worker thread so the
operator's event loop never blocks.  Failures become :class:`KubeError` with
the status code and the API's own message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sigrun.runner.errors import SigrunError

log = logging.getLogger(__name__)

Body = dict[str, Any]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is valid YAML; the client sends JSON


class KubeError(SigrunError):
    """The API server refused a call, or could not be reached (status 0)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def load_configuration() -> Any:
    """The official client's configuration: in-cluster first, then the kubeconfig."""
    import kubernetes  # noqa: PLC0415 - heavy import, only in the process

    k8s: Any = kubernetes  # untyped library: keep its Any at this boundary
    client, config = k8s.client, k8s.config
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    return configuration


class Kube:
    """``await kube.get("/api/v1/namespaces/ns/secrets/x")`` and friends."""

    def __init__(self, configuration: Any, *, timeout: float = 30.0) -> None:
        import kubernetes  # noqa: PLC0415

        k8s: Any = kubernetes
        self._api: Any = k8s.client.ApiClient(configuration)
        self._timeout = timeout

    def close(self) -> None:
        self._api.close()

    async def get(self, path: str, **query: str) -> Body | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path, query=query)
        except KubeError as e:
            if e.not_found:
                return None
            raise

    def get_blocking(self, path: str) -> Body | None:
        """:meth:`get` for the few calls made before the event loop runs (start-up checks)."""
        try:
            return self._call("GET", path, None, JSON, {})
        except KubeError as e:
            if e.not_found:
                return None
            raise

    async def list(self, path: str, **query: str) -> list[Body]:
        body = await self.request("GET", path, query=query)
        items = body.get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def create(self, path: str, body: Mapping[str, Any]) -> Body:
        return await self.request("POST", path, body=body)

    async def merge_patch(
        self, path: str, body: Mapping[str, Any], *, manager: str | None = None
    ) -> Body:
        query = {"fieldManager": manager} if manager else None
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH, query=query)

    async def apply(self, path: str, body: Mapping[str, Any], *, manager: str) -> Body:
        """Server-side apply: fields we stop setting are removed, others' fields are kept."""
        return await self.request(
            "PATCH",
            path,
            body=body,
            content_type=APPLY_PATCH,
            query={"fieldManager": manager, "force": "true"},
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON,
        query: Mapping[str, str] | None = None,
    ) -> Body:
        return await asyncio.to_thread(self._call, method, path, body, content_type, query or {})

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        content_type: str,
        query: Mapping[str, str],
    ) -> Body:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        url_path = path
        if query:
            url_path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        try:
            verb, url, hdrs, data, post = self._api.param_serialize(
                method,
                url_path,
                header_params=headers,
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(
                verb,
                url,
                header_params=hdrs,
                body=data,
                post_params=post,
                _request_timeout=self._timeout,
            )
            raw = response.read()
        except Exception as e:  # the client raises its own and urllib3's errors: one boundary
            if isinstance(e, KubeError):
                raise
            raise KubeError(method, path, 0, f"{type(e).__name__}: {e}") from e
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        if not 200 <= response.status < 300:
            raise KubeError(method, path, response.status, _api_message(text))
        if not text:
            return {}
        parsed = json.loads(text)
        return parsed if isinstance(parsed, dict) else {"items": parsed}


def _api_message(text: str) -> str:
    """The ``message`` of a Status body, or the raw text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return text[:500]
