"""The gateway role renders peer boxes into each box's config (vilms_peer_fallback): the other
boxes of the same site that serve a model become its engine: openai fallbacks, and every rendered
file passes `vilms-gateway validate`. The role's template, defaults and vars run through
ansible-playbook with a local connection, for every host of a small fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli
from gateway.config import load_config
from gateway.routing import Router
from tests.playbooks import REPO, ansible_playbook

pytestmark = pytest.mark.slow

FLEET_KEY = "fleet-key-0123456789-ZZZZ"


def models(*names: str) -> dict[str, Any]:
    """A box's inventory list and what preflight resolves it to."""
    return {
        "vilms_models": [{"name": n} for n in names],
        "vilms_models_resolved": [{"name": n, "type": "llm", "engine": "ollama", "aliases": [], "params": {},
                                   "fallback": [], "hosts": [], "port": 0} for n in names],
    }


def render(tmp_path: Path, inventory: dict[str, Any], variables: dict[str, Any]) -> dict[str, Path]:
    """Each host's rendered config.yaml, from the gateway role's own defaults, vars and template."""
    role = tmp_path / "roles" / "gateway_render"
    (role / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars", "templates"):
        (role / part).symlink_to(REPO / "roles" / "gateway" / part)
    (role / "tasks" / "main.yml").write_text(yaml.safe_dump([{
        "name": "Render the gateway config", "ansible.builtin.template": {
            "src": "config.yaml.j2", "dest": "{{ out_dir }}/{{ inventory_hostname }}.yaml", "mode": "0600"}}]))
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Render", "hosts": "all", "gather_facts": False,
                                         "roles": ["gateway_render"]}]))
    out = tmp_path / "out"
    out.mkdir()
    key_file = tmp_path / "api-keys"
    key_file.write_text(FLEET_KEY + "\n")
    run = ansible_playbook(tmp_path, playbook, inventory, {
        "out_dir": str(out), "vilms_platform": "cpu", "gateway_api_keys": [FLEET_KEY],
        "gateway_api_key_file": str(key_file), **variables,
    }, env={"ANSIBLE_ROLES_PATH": str(tmp_path / "roles")})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {path.stem: path for path in out.glob("*.yaml")}


def fleet(peer_fallback: bool) -> dict[str, Any]:
    return {"all": {"vars": {"vilms_peer_fallback": peer_fallback}, "children": {"edge": {"children": {
        "cpu": {"hosts": {
            "box-a": {"ansible_host": "192.0.2.10", "gateway_port": 8901, **models("qwen3:4b", "llava-phi3")},
            "box-b": {"ansible_host": "192.0.2.11", **models("qwen3:4b")},
            "box-c": {"vilms_site": "lab-2", **models("llava-phi3", "qwen3:4b")},
        }},
        "dgpu": {"hosts": {"box-d": {"ansible_host": "192.0.2.20", **models("qwen3:4b")}}},
    }}}}}


def chain(path: Path, model: str) -> list[tuple[str, str]]:
    route = Router(load_config(path)).resolve(model)
    return [(t.model.name, t.endpoints[0]) for t in route.targets]


def test_each_box_lists_the_peers_of_its_site_that_serve_the_model(tmp_path: Path) -> None:
    rendered = render(tmp_path, fleet(True), {})
    assert sorted(rendered) == ["box-a", "box-b", "box-c", "box-d"]
    for path in rendered.values():
        assert cli.main(["validate", "--config", str(path)]) == 0
        assert FLEET_KEY not in path.read_text()  # the key stays in the key file
    # box-b is box-a's peer (same platform group); box-c is in lab-2, box-d in dgpu.
    assert chain(rendered["box-a"], "qwen3:4b")[1:] == [("qwen3:4b@box-b", "http://192.0.2.11:8989/v1")]
    assert chain(rendered["box-a"], "llava-phi3")[1:] == []
    assert chain(rendered["box-b"], "qwen3:4b")[1:] == [("qwen3:4b@box-a", "http://192.0.2.10:8901/v1")]
    assert chain(rendered["box-c"], "qwen3:4b")[1:] == []
    assert chain(rendered["box-d"], "qwen3:4b")[1:] == []
    peer = next(m for m in yaml.safe_load(rendered["box-a"].read_text())["serving"]["models"]
                if m["name"] == "qwen3:4b@box-b")
    assert peer == {"name": "qwen3:4b@box-b", "type": "llm", "engine": "openai",
                    "base-url": "http://192.0.2.11:8989/v1", "upstream-model": "qwen3:4b",
                    "api-key-file": str(tmp_path / "api-keys")}


def test_vilms_site_joins_boxes_across_platform_groups(tmp_path: Path) -> None:
    inventory = fleet(True)
    hosts = inventory["all"]["children"]["edge"]["children"]
    hosts["dgpu"]["hosts"]["box-d"]["vilms_site"] = "lab-2"
    rendered = render(tmp_path, inventory, {})
    assert chain(rendered["box-c"], "qwen3:4b")[1:] == [("qwen3:4b@box-d", "http://192.0.2.20:8989/v1")]
    assert chain(rendered["box-d"], "qwen3:4b")[1:] == [("qwen3:4b@box-c", "http://box-c:8989/v1")]


def test_without_vilms_peer_fallback_no_peer_is_listed(tmp_path: Path) -> None:
    rendered = render(tmp_path, fleet(False), {})
    for box, path in rendered.items():
        assert all(not t.model.remote for t in Router(load_config(path)).resolve("qwen3:4b").targets), box
