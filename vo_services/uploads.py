"""Where the server may fetch a DALI upload given by URL: public hosts only.

DALI and TAP let a client name an upload by URL (``UPLOAD=t,http://...``);
DaCHS then fetches it from the server, before any of our code runs.  Left
as it is, that makes the archive a proxy into its own network (server-side
request forgery): loopback services, the cloud metadata address, the
intranet.  Here the two places where DaCHS fetches uploads (DALI services
such as search by example, and the TAP runner) get an opener that

* speaks http and https only (no ``file:``, ``ftp:`` or ``data:``),
* uses no proxy, and
* checks the address at every connection, redirects included, and connects
  to exactly the address it checked (no DNS-rebinding window): loopback,
  private, link-local, shared, reserved and multicast addresses, and IPv6
  forms embedding them, are refused.

``param:`` uploads (the file in the request itself, what TOPCAT and pyvo
send) are not affected.  Internal DaCHS fetches keep DaCHS's own opener.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.error
import urllib.parse
import urllib.request

from retrspect.ingest.errors import RetrspectError

__all__ = ["UploadRefused", "check_address", "open_public_url",
           "guard_dali_url_uploads", "guard_tap_url_uploads"]

#: seconds for connecting and for each read of an upload fetch
TIMEOUT = 30
#: NAT64 well-known prefix: its addresses embed an IPv4 address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UploadRefused(RetrspectError, OSError):
    """A URL upload this server will not fetch, with the reason."""


def check_address(address: str) -> None:
    """Raise :class:`UploadRefused` unless ``address`` is a public unicast IP."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.ip_address(int(ip) & 0xFFFFFFFF)
    if not ip.is_global or ip.is_multicast:
        raise UploadRefused(f"{address} is not a public internet address")


def _connect_public(address, timeout=TIMEOUT, source_address=None):
    """``socket.create_connection``, but only to checked public addresses."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        check_address(sockaddr[0])
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout if isinstance(timeout, (int, float))
                        else TIMEOUT)
        if source_address:
            sock.bind(source_address)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


class _PublicHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_public


class _PublicHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_public


class _PublicHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_PublicHTTPConnection, req)


class _PublicHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_PublicHTTPSConnection, req,
                            context=self._context)


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only, no proxies, every connection checked."""
    opener = urllib.request.OpenerDirector()
    for handler in (_PublicHTTPHandler(), _PublicHTTPSHandler(),
                    urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPErrorProcessor(),
                    urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    opener.addheaders = [("User-Agent", "retrspect upload fetcher")]
    return opener


def open_public_url(url: str, *args, **kwargs):
    """Open ``url`` for an upload, or raise a DaCHS ``ValidationError`` on
    the UPLOAD parameter that says why not (the client sees it)."""
    from gavo import base
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    try:
        if scheme not in ("http", "https"):
            raise UploadRefused(f"scheme {scheme or '(none)'!r} is not "
                                "allowed (http and https only)")
        return _opener().open(url, timeout=TIMEOUT)
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise base.ValidationError(
            f"Upload URL {url!r} refused: {reason}", "UPLOAD",
            hint="This server only fetches uploads from public http(s) "
                 "addresses; send the file inline (UPLOAD=name,param:x).")


class _UtilsWithPublicFetch:
    """A module's ``utils`` with ``urlopenRemote`` swapped for
    :func:`open_public_url`; everything else is DaCHS's."""

    def __init__(self, utils):
        self._utils = utils

    def __getattr__(self, name):
        return getattr(self._utils, name)

    urlopenRemote = staticmethod(open_public_url)


def _guard(module) -> None:
    if not isinstance(module.utils, _UtilsWithPublicFetch):
        module.utils = _UtilsWithPublicFetch(module.utils)


def guard_dali_url_uploads() -> None:
    """DALI services (``gavo.protocols.dali.URLUpload``) fetch public URLs only."""
    from gavo.protocols import dali
    _guard(dali)


def guard_tap_url_uploads() -> None:
    """TAP uploads (fetched in ``gavo.protocols.taprunner``) likewise."""
    from gavo.protocols import taprunner
    _guard(taprunner)
