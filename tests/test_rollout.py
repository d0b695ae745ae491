"""The fleet rollout: batches from the inventory, the per-batch check, the status table.

The plays run for real (ansible-playbook, local connection) with the inventory's group_vars, which
play keywords cannot see by themselves (ansible#27166): the rollout plan of playbooks/preflight.yml
and the keywords of playbooks/site.yml, with the roles replaced by a task that notifies a handler
and fails on one box.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "playbooks" / "filter_plugins"


def _load_filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vilms_fleet", PLUGINS / "vilms_fleet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fleet = _load_filters()


@pytest.mark.parametrize(
    ("total", "batch"),
    [(3, 1), (3, "100%"), (5, "40%"), (7, 2), (4, "10%"), (9, [1, "50%"]), (6, [1, 2, 3]), (2, 5)],
)
def test_batches_are_the_ones_ansible_makes(total: int, batch: Any) -> None:
    from ansible.executor.playbook_executor import PlaybookExecutor

    hosts = [f"box{i}" for i in range(total)]

    class Inventory:
        def get_hosts(self, pattern: str, order: str | None = None) -> list[str]:
            return list(hosts)

    class Play:
        serial = batch if isinstance(batch, list) else [batch]
        hosts = "edge"
        order = None

    executor = PlaybookExecutor.__new__(PlaybookExecutor)
    executor._inventory = Inventory()  # type: ignore[assignment]
    assert fleet.rollout_batches(hosts, batch) == executor._get_serialized_batches(Play())


@pytest.mark.parametrize("bad", [0, -1, "0%", "150%", "half", True, []])
def test_a_batch_ansible_would_misread_is_refused(bad: Any) -> None:
    with pytest.raises(fleet.RolloutError, match="vilms_rollout_batch"):
        fleet.rollout_batches(["a", "b"], bad)


@pytest.mark.parametrize(("value", "number"), [(0, 0), ("25", 25), ("30%", 30), (100, 100)])
def test_failure_tolerance(value: Any, number: int) -> None:
    assert fleet.max_fail_percentage(value) == number


@pytest.mark.parametrize("bad", [-1, 101, "some", False])
def test_a_bad_failure_tolerance_is_refused(bad: Any) -> None:
    with pytest.raises(fleet.RolloutError, match="vilms_max_fail_percentage"):
        fleet.max_fail_percentage(bad)


def test_status_table_has_a_row_per_box_in_aligned_columns() -> None:
    rows = [
        {"host": "jetson-1", "platform": "jetson", "l4t": "36.4.3", "ollama": "0.13.1", "vllm": [],
         "models": "2/2", "missing": [], "gateway": "0.1.0", "health": "ready", "gpu": ["ollama:1"]},
        {"host": "dgpu-long-name-2", "platform": "dgpu", "l4t": "", "ollama": "0.13.1", "vllm": ["0.11.0"],
         "models": "2/3", "missing": ["Qwen/Qwen3-0.6B"], "gateway": "0.1.0", "health": "unavailable",
         "gpu": ["ollama:1", "vllm-qwen:1"]},
        {"host": "cpu-3", "health": "unreachable"},
    ]
    lines = fleet.status_table(rows)
    assert lines[0].split() == [title for title, _ in fleet.STATUS_COLUMNS]
    assert set(lines[1].replace(" ", "")) == {"-"}
    body = [line.split() for line in lines[2:]]
    assert [cells[0] for cells in body] == ["jetson-1", "dgpu-long-name-2", "cpu-3"]
    assert body[1] == ["dgpu-long-name-2", "dgpu", "-", "0.13.1", "0.11.0", "2/3", "Qwen/Qwen3-0.6B", "0.1.0",
                       "unavailable", "ollama:1,vllm-qwen:1"]
    assert body[2] == ["cpu-3", "-", "-", "-", "-", "-", "-", "-", "unreachable", "-"]
    # Every column starts at the same offset on every line.
    health = lines[0].index("HEALTH")
    assert [line[health:].split()[0] for line in lines[2:]] == ["ready", "unavailable", "unreachable"]


# -- the plays ---------------------------------------------------------------------------------


def _plays(tmp_path: Path, serial: str | None = None) -> Path:
    """The rollout plan play and site.yml's provisioning play, roles replaced by a stand-in task."""
    plan = yaml.safe_load((REPO / "playbooks" / "preflight.yml").read_text())[-1]
    provision = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())[1]
    assert "roles" in provision
    provision["pre_tasks"][0]["ansible.builtin.import_tasks"] = str(REPO / "playbooks" / "tasks" / "rollout_batch.yml")
    provision["become"] = False
    del provision["roles"]
    if serial is not None:
        provision["serial"] = serial
    provision["tasks"] = [
        {"name": "Change something", "ansible.builtin.command": "true", "changed_when": True, "notify": "Restart"},
        {"name": "Fail the broken box", "ansible.builtin.fail": {"msg": "health gate"},
         "when": "broken | default(false)"},
    ]
    provision["handlers"] = [
        {"name": "Restart", "ansible.builtin.debug": {"msg": "restarted {{ inventory_hostname }}"}},
    ]
    playbook = tmp_path / "rollout.yml"
    playbook.write_text(yaml.safe_dump([plan, provision], sort_keys=False))
    return playbook


def _run(tmp_path: Path, playbook: Path, group_vars: dict[str, Any], broken: str | None = None,
         boxes: int = 3) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
    hosts: dict[str, Any] = {f"box{i}": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
                             for i in range(1, boxes + 1)}
    if broken:
        hosts[broken]["broken"] = True
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"edge": {"hosts": hosts}}}}))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(inventory / "hosts.yml"), str(playbook)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "ANSIBLE_FILTER_PLUGINS": str(PLUGINS), "HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"},
    )


def _recap(out: str) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    for line in out.split("PLAY RECAP")[-1].splitlines():
        if " : " in line:
            host, counts = line.split(" : ")
            recap[host.strip()] = {k: int(v) for k, v in (pair.split("=") for pair in counts.split())}
    return recap


def test_the_inventory_batch_is_honoured_and_the_rollout_stops_at_a_failed_box(tmp_path: Path) -> None:
    result = _run(tmp_path, _plays(tmp_path), {"vilms_rollout_batch": 1, "vilms_max_fail_percentage": 0},
                  broken="box2")
    out = result.stdout
    assert result.returncode == 2, out + result.stderr
    assert out.count("Batch of 1 of 3 boxes") == 2
    recap = _recap(out)
    assert recap["box1"]["failed"] == 0 and recap["box2"]["failed"] == 1
    # box3 ran the plan play only: nothing of the provisioning play.
    assert "box3" not in out.split("PLAY [Provision the appliance]")[1].split("PLAY RECAP")[0]
    # force_handlers: the failed box's pending handler still ran.
    assert "restarted box2" in out and "restarted box1" in out


def test_a_percentage_with_tolerance_lets_the_rollout_go_on(tmp_path: Path) -> None:
    result = _run(tmp_path, _plays(tmp_path), {"vilms_rollout_batch": "50%", "vilms_max_fail_percentage": 50},
                  broken="box1", boxes=4)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.count("Batch of 2 of 4 boxes") == 2
    assert "restarted box4" in result.stdout


def test_a_serial_that_lost_the_inventory_value_is_stopped_before_any_change(tmp_path: Path) -> None:
    # The keyword as it was: group_vars are invisible to it, so every box ran in one batch.
    result = _run(tmp_path, _plays(tmp_path, serial="{{ vilms_rollout_batch | default('100%') }}"),
                  {"vilms_rollout_batch": 1, "vilms_max_fail_percentage": 0})
    assert result.returncode == 2
    assert "This batch is box1, box2, box3, but vilms_rollout_batch 1 makes it box1" in result.stdout
    assert "Change something" not in result.stdout


def test_boxes_that_disagree_on_the_batch_stop_the_run(tmp_path: Path) -> None:
    playbook = _plays(tmp_path)
    host_vars = tmp_path / "inventory" / "host_vars"
    host_vars.mkdir(parents=True)
    (host_vars / "box3.yml").write_text("vilms_rollout_batch: 2\n")
    result = _run(tmp_path, playbook, {"vilms_rollout_batch": 1, "vilms_max_fail_percentage": 0})
    assert result.returncode == 2
    assert "disagree on vilms_rollout_batch" in result.stdout
    assert "Change something" not in result.stdout
