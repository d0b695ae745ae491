"""No task of the playbooks prints a secret: every task whose module arguments, loop or environment
template an API key or the Hugging Face token (or the result of a task that did) has ``no_log``.

Ansible writes a task's arguments (-v), its loop items and its result into its output and into every
ansible-runner event; ``no_log`` is what keeps them out. Conditions (``when``, an assert's ``that``)
are never printed, so they may use the secrets freely."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
# Variables that hold a secret, directly or as a part of a bigger value.
SECRETS = {"gateway_api_keys", "_gateway_api_keys", "_gateway_auth_headers", "vllm_hf_token", "_vllm_env"}
_VAULT = re.compile(r"^vault_\w+$")
_TEMPLATE = re.compile(r"{{(.*?)}}|{%(.*?)%}", re.S)
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")
_SAFE_FIELDS = "status|content|json|msg|rc|stdout|stdout_lines|stderr|elapsed|changed|failed|skipped"
# Task keys whose values are never printed.
_QUIET = {"name", "when", "changed_when", "failed_when", "until", "no_log", "tags", "register", "notify",
          "loop_control", "vars", "delegate_to", "become", "check_mode", "run_once", "retries", "delay"}
_NESTED = ("block", "rescue", "always")


class _Loader(yaml.SafeLoader):
    """Ansible's YAML: an ``!unsafe`` string is never templated, so it can name no variable."""


_Loader.add_constructor("!unsafe", lambda loader, node: "")


def task_files() -> list[Path]:
    return sorted([*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/handlers/*.yml"),
                   *REPO.glob("playbooks/*.yml")])


def tasks_in(items: Any) -> Iterator[dict[str, Any]]:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        if "tasks" in item or "roles" in item:  # a play
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                yield from tasks_in(item.get(section))
            continue
        yield item
        for nested in _NESTED:
            yield from tasks_in(item.get(nested))


def expressions(value: Any) -> list[str]:
    """The Jinja expressions inside ``value``, with their string literals blanked out."""
    if isinstance(value, str):
        return [_LITERAL.sub("''", " ".join(parts)) for parts in _TEMPLATE.findall(value)]
    if isinstance(value, dict):
        return [e for v in value.values() for e in expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in expressions(v)]
    return []


def printed_expressions(task: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key, value in task.items():
        if key in _QUIET or key in _NESTED:
            continue
        if key.endswith("assert") and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "that"}
        found += expressions(value)
    return found


def printed_secrets(task: dict[str, Any], results: set[str]) -> set[str]:
    """The secrets (and results holding one) that ``task`` would print. Of a result, the fields
    an HTTP answer or a command's outcome is read from are not secret."""
    found: set[str] = set()
    for expression in printed_expressions(task):
        for name in set(_NAME.findall(expression)):
            whole_result = name in results and re.search(rf"\b{name}\b(?!\.(?:{_SAFE_FIELDS})\b)", expression)
            if name in SECRETS or _VAULT.match(name) or whole_result:
                found.add(name)
    return found


def leaks() -> list[str]:
    tasks = [(path, task) for path in task_files()
             for task in tasks_in(yaml.load(path.read_text(), Loader=_Loader))]
    results: set[str] = set()
    # A registered result of a task that handled a secret holds it too (a container's environment).
    changed = True
    while changed:
        changed = False
        for _, task in tasks:
            register = task.get("register")
            if register and register not in results and printed_secrets(task, results):
                results.add(register)
                changed = True
    found = []
    for path, task in tasks:
        uses = sorted(printed_secrets(task, results))
        if uses and not task.get("no_log"):
            found.append(f"{path.relative_to(REPO)}: {task.get('name', '(unnamed)')!r} prints {', '.join(uses)}")
    return found


def test_every_task_that_handles_a_secret_has_no_log() -> None:
    assert leaks() == []


def test_the_check_sees_a_secret_in_a_loop_over_a_result_that_holds_one() -> None:
    # The shape of the vLLM readiness loop that once printed HF_TOKEN in every item.
    tasks = [
        {"name": "Run", "community.docker.docker_container": {"env": "{{ _vllm_env }}"}, "register": "_runs",
         "no_log": "{{ vllm_hf_token | length > 0 }}"},
        {"name": "Wait", "ansible.builtin.uri": {"url": "http://x:{{ item.item.port }}"},
         "loop": "{{ _runs.results }}"},
        {"name": "Check", "ansible.builtin.assert": {"that": ["vllm_hf_token | length > 0"]}},
    ]
    assert printed_secrets(tasks[0], set()) == {"_vllm_env"}
    assert printed_secrets(tasks[1], {"_runs"}) == {"_runs"}
    assert printed_secrets(tasks[2], set()) == set()
