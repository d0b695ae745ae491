"""The one TLS client context every backend connection, probe and image fetch uses.

Why one: building a context loads a whole CA bundle (about 30 ms on a fast core, three times that
on a busy one), and httpx builds one for every client it makes, even for plain-HTTP engines; with a
client per backend plus the image fetcher, start-up paid it four or five times before the first
probe. Now it is built once, and only when something speaks TLS: a box whose engines are all plain
HTTP on its own Docker network never loads the bundle.

Why the box's own trust store (``ssl.create_default_context``) rather than httpx's certifi bundle:
engines on a private network are signed by the site's own CA, which operators install with
``update-ca-certificates``. The engine calls always trusted that store; probes, image fetches and
the remote embedding service now trust the same one, so an engine behind a private CA is not
reported down by its probe while it answers requests.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def client_context() -> ssl.SSLContext:
    """Built on first use and shared: an ``SSLContext`` is safe to use from many threads."""
    return ssl.create_default_context()


def for_base_url(base_url: str) -> ssl.SSLContext:
    """The context for an httpx client bound to ``base_url`` that follows no redirects.

    Such a client on a plain-HTTP URL never opens TLS, but httpx loads a CA bundle for it unless
    handed a context. It gets one with no CA at all: built in microseconds, and it would refuse
    every certificate if anything ever asked it to verify one."""
    if base_url.lower().startswith("https:"):
        return client_context()
    return _trusting_nothing()


@functools.cache
def _trusting_nothing() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
