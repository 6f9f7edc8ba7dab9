"""The network settings an aiobotocore client resolved, for our own transports to honour.

botocore has already read them from every place it looks: the endpoint (``endpoint_url=``,
``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL``, the config file), TLS verification
(``verify=``, ``AWS_CA_BUNDLE``, ``ca_bundle``, ``REQUESTS_CA_BUNDLE``), the client certificate
(``client_cert``) and proxies (``proxies``, ``HTTP(S)_PROXY`` with ``NO_PROXY``). We read what the
client ended up with rather than resolving it a second time, so both paths always agree.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class NetSettings:
    """Where and how to connect; `unsupported` names what a transport could not honour."""

    endpoint_url: str
    verify: bool | str = True  # True: botocore's default bundle; a path: that bundle or dir
    client_cert: str | tuple[str, str] | None = None
    proxy_url: str | None = None
    proxy_headers: dict[str, str] = field(default_factory=dict)
    proxy_settings: dict[str, Any] = field(default_factory=dict)
    unreadable: str | None = None  # the client keeps its settings somewhere we cannot read

    @property
    def tls(self) -> bool:
        return urlsplit(self.endpoint_url).scheme == "https"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The endpoint's TLS context, built as aiobotocore builds it (blocking file reads)."""
        if not self.tls:
            return None
        from botocore.httpsession import get_cert_path

        context = ssl.create_default_context()
        if self.verify:
            path = get_cert_path(self.verify)
            if path:
                if os.path.isdir(path):
                    context.load_verify_locations(capath=path)
                else:
                    context.load_verify_locations(cafile=path)
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if isinstance(self.client_cert, str):
            context.load_cert_chain(self.client_cert)
        elif isinstance(self.client_cert, tuple):
            context.load_cert_chain(*self.client_cert)
        return context


def settings_of(client: Any) -> NetSettings:
    """What an aiobotocore DynamoDB client connects to, and how."""
    endpoint_url: str = client.meta.endpoint_url
    http: Any = getattr(getattr(client, "_endpoint", None), "http_session", None)
    try:
        verify = http._verify
        cert = http._cert_file
        client_cert = cert if http._key_file is None else (cert, http._key_file)
        proxies = http._proxy_config
        proxy_url = proxies.proxy_url_for(endpoint_url)
        proxy_headers = proxies.proxy_headers_for(proxy_url) if proxy_url else {}
        proxy_settings = dict(proxies.settings or {})
    except AttributeError:
        name = type(http).__name__
        return NetSettings(endpoint_url, unreadable=f"the client's HTTP session ({name})")
    return NetSettings(
        endpoint_url,
        verify=verify if verify is not None else True,
        client_cert=client_cert,
        proxy_url=proxy_url,
        proxy_headers=proxy_headers,
        proxy_settings={k: v for k, v in proxy_settings.items() if v is not None},
    )


def fast_path(net: NetSettings) -> tuple[str | None, str | None]:
    """Which of our transports honours `net`: ("wire" | "aiohttp" | None, why not the better one).

    "wire" (httptools) does TLS, CA bundles, ``verify=False`` and client certificates; proxies
    need "aiohttp" (plain ``http://`` proxies only); anything else needs aiobotocore (None).
    """
    if net.unreadable:
        return None, f"cannot read the network settings of {net.unreadable}"
    if net.proxy_settings:
        return None, f"proxies_config {sorted(net.proxy_settings)} is honoured by aiobotocore only"
    if net.proxy_url:
        if urlsplit(net.proxy_url).scheme != "http":
            return None, "a proxy reached over https is honoured by aiobotocore only"
        return "aiohttp", "an HTTP proxy is configured"
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "aiohttp", "httptools is not installed (pip install 'asgi-dynamo-session[fast]')"
    return "wire", None
