"""Serving the app with waitress: the only package that imports waitress (ruff's TID251 and
tests/test_waitress_contract.py enforce it), against the one version pinned in pyproject.toml.

- ``server``: the thread pool that serves requests in turns, ``serve()`` with the capacity settings,
  the drain on SIGTERM.
- ``channel``: how a connection is read and written (one-pass heads, head with body, timeouts).
- ``turnreads``: the turn's holder reading connections between requests.
- ``eventloop``: the loop thread on epoll, each connection registered once.
- ``idlethreads``: idle request threads woken last-in first-out.

Where waitress has a seam, it is used: ``channel_class`` on the server, ``task_class``,
``error_task_class`` and ``parser_class`` on the channel, ``active_channels`` for the open
connections, adjustments for every setting. What remains of waitress's internals, and why:

- ``create_server(_dispatcher=...)``: waitress's test shim is its only way to supply the thread pool;
  ``TurnTakingDispatcher`` reuses ``ThreadedTaskDispatcher``'s state (``lock``, ``queue``,
  ``queue_cv``, ``stop_count``, ...) and copies its ``handler_thread`` to serve in turns; its
  ``queue_cv`` is replaced by ``idlethreads.LastIdleFirst``, which wakes the last thread to go idle.
- ``HTTPChannel._flush_outbufs_below_high_watermark``: the one place waitress makes a writer wait on
  a slow client, and it has no hook; the gateway waits there without the turn.
- ``HTTPChannel.handle_read``, ``readable``, ``writable``, ``write_soon``, ``WSGITask.build_response_header``
  and ``write``, ``HTTPRequestParser.parse_header`` are public methods, but the gateway replaces or
  wraps them relying on how they work inside, not only on what they promise.
- ``BaseWSGIServer.asyncore``: waitress's test shim for its loop module; ``eventloop.EpollLoop``
  stands in for it (``run()`` calls its ``loop``), relying on ``wasyncore.readwrite``, ``poll2``'s
  rules for what to register, and ``add_channel``/``del_channel`` setting and deleting map items.
- ``wasyncore._DISCONNECTED``: the errno set waitress treats as a client gone, so a read error is
  logged exactly when waitress would log it.

Every one of them is named, with the gateway code that relies on it, in tests/test_waitress_contract.py,
which fails with what changed when the pinned version is raised.
"""
