"""Which of the gateway's versioned venvs (blue/green installs) a run removes."""

from __future__ import annotations

from typing import Any


def gateway_stale_releases(releases: list[dict[str, Any]], keep: int, protected: list[str]) -> list[str]:
    """Paths of ``releases`` (``find`` results: ``path`` and ``mtime``) beyond the ``keep`` newest.

    A path in ``protected`` (the live version, the one before it, the one being installed) is always
    kept and counts towards ``keep``; so at most ``keep`` versions stay unless more are protected.
    """
    guarded = {path for path in protected if path}
    newest_first = sorted(releases, key=lambda release: float(release["mtime"]), reverse=True)
    room = max(keep - sum(1 for release in newest_first if release["path"] in guarded), 0)
    stale = []
    for release in newest_first:
        if release["path"] in guarded:
            continue
        if room > 0:
            room -= 1
        else:
            stale.append(str(release["path"]))
    return stale


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"gateway_stale_releases": gateway_stale_releases}
