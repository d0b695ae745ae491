"""The one TLS client context every backend connection, probe and image fetch uses.

Why one: building a context loads a whole CA bundle (about 30 ms on a fast core, three times that
on a busy one), and httpx builds one for every client it makes, even for plain-HTTP engines; with a
client per backend plus the image fetcher, start-up paid it four or five times before the first
probe. Why the box's own trust store (``ssl.create_default_context``) rather than httpx's certifi
bundle: engines on a private network are signed by the site's own CA, which operators install
with ``update-ca-certificates``. The engine calls always trusted that store; probes, image fetches
and the remote embedding service now trust the same one, so an engine behind a private CA is not
reported down by its probe while it answers requests.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def client_context() -> ssl.SSLContext:
    """Built on first use and shared: an ``SSLContext`` is safe to use from many threads."""
    return ssl.create_default_context()
