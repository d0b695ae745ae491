"""Filters for the fleet plays: the rollout's batches and the fleet status table.

Adjacent to the playbooks, so site.yml, gateway.yml and status.yml find them without configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Columns of `ansible-playbook playbooks/status.yml`, in order, with the row key each one shows.
STATUS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("HOST", "host"),
    ("PLATFORM", "platform"),
    ("L4T", "l4t"),
    ("OLLAMA", "ollama"),
    ("VLLM", "vllm"),
    ("MODELS", "models"),
    ("MISSING", "missing"),
    ("GATEWAY", "gateway"),
    ("HEALTH", "health"),
    ("GPU", "gpu"),
)


class RolloutError(ValueError):
    """A rollout setting Ansible would misread or refuse."""


def _batch_size(value: Any, total: int) -> int:
    """One `serial` entry as a host count, as ansible.utils.helpers.pct_to_int reads it."""
    if isinstance(value, bool):
        raise RolloutError(f"vilms_rollout_batch entry {value!r} is neither a count nor a percentage")
    text = str(value).strip()
    try:
        if text.endswith("%"):
            pct = int(text[:-1])
            if not 0 < pct <= 100:
                raise RolloutError(f"vilms_rollout_batch entry {value!r}: a percentage is 1% to 100%")
            return int((pct / 100.0) * total) or 1
        count = int(text)
    except ValueError as exc:
        raise RolloutError(
            f"vilms_rollout_batch entry {value!r} is neither a count (2) nor a percentage ('25%')"
        ) from exc
    if count <= 0:
        raise RolloutError(f"vilms_rollout_batch entry {value!r}: a count is 1 or more")
    return count


def rollout_batches(hosts: Sequence[str], batch: Any) -> list[list[str]]:
    """The host batches Ansible makes of `hosts` for `serial: batch`.

    Mirrors ansible-core's PlaybookExecutor._get_serialized_batches: a list of sizes is used in
    order and its last entry repeats until every host is placed.
    """
    entries = list(batch) if isinstance(batch, list | tuple) else [batch]
    if not entries:
        raise RolloutError("vilms_rollout_batch is an empty list")
    left = list(hosts)
    total = len(left)
    out: list[list[str]] = []
    index = 0
    while left:
        size = _batch_size(entries[index], total)
        out.append(left[:size])
        left = left[size:]
        index = min(index + 1, len(entries) - 1)
    return out


def rollout_expected_batch(batch_hosts: Sequence[str], hosts: Sequence[str], batch: Any) -> list[str]:
    """The batch, as the inventory asks for it, that holds the first host of the running batch."""
    if not batch_hosts:
        return []
    for planned in rollout_batches(hosts, batch):
        if batch_hosts[0] in planned:
            return planned
    raise RolloutError(f"{batch_hosts[0]} is not one of the play's hosts {list(hosts)}")


def max_fail_percentage(value: Any) -> int:
    """The failure tolerance as the int the play keyword takes (0 = stop at the first failure)."""
    if isinstance(value, bool):
        raise RolloutError(f"vilms_max_fail_percentage {value!r} is not a number from 0 to 100")
    try:
        number = int(str(value).strip().rstrip("%"))
    except ValueError as exc:
        raise RolloutError(f"vilms_max_fail_percentage {value!r} is not a number from 0 to 100") from exc
    if not 0 <= number <= 100:
        raise RolloutError(f"vilms_max_fail_percentage {value!r} is not a number from 0 to 100")
    return number


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return " ".join(str(value).split())


def status_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The fleet status as aligned text lines: a header, a rule, then one line per box."""
    cells = [[title for title, _ in STATUS_COLUMNS]]
    cells += [[_cell(row.get(key)) for _, key in STATUS_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(STATUS_COLUMNS))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


class FilterModule:
    """vilms_rollout_batches, vilms_rollout_expected_batch, vilms_max_fail_percentage, vilms_status_table."""

    def filters(self) -> dict[str, Any]:
        return {
            "vilms_rollout_batches": rollout_batches,
            "vilms_rollout_expected_batch": rollout_expected_batch,
            "vilms_max_fail_percentage": max_fail_percentage,
            "vilms_status_table": status_table,
        }
