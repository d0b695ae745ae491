"""Blue/green gateway installs (roles/gateway): which versioned venvs a run removes, and how a box
the earlier release upgraded in place (a real venv directory at gateway_venv) enters the layout."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

from tests.playbooks import ansible_playbook

ROLE = Path(__file__).resolve().parent.parent / "roles" / "gateway"
INSTALL_ID = "0123456789abcdef" * 4


def _load_filter() -> Any:
    spec = importlib.util.spec_from_file_location("gateway_releases", ROLE / "filter_plugins" / "gateway_releases.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.gateway_stale_releases


stale_releases = _load_filter()


def releases(*names_by_age: str) -> list[dict[str, Any]]:
    """``find`` results, oldest first."""
    return [{"path": f"/opt/vilms/{name}", "mtime": 1000.0 + age} for age, name in enumerate(names_by_age)]


def test_the_newest_are_kept_and_the_oldest_removed() -> None:
    found = releases("gateway-0.1.0-a", "gateway-0.1.0-b", "gateway-0.2.0-c", "gateway-0.2.0-d", "gateway-0.3.0-e")
    live, previous = "/opt/vilms/gateway-0.3.0-e", "/opt/vilms/gateway-0.2.0-d"
    removed = stale_releases(found, 3, [live, live, previous])
    assert removed == ["/opt/vilms/gateway-0.1.0-b", "/opt/vilms/gateway-0.1.0-a"]


def test_the_live_and_the_previous_version_stay_even_when_oldest() -> None:
    # After a rollback by hand the live version can be the oldest one on the box.
    found = releases("gateway-0.1.0-live", "gateway-0.1.0-prev", "gateway-0.2.0-x", "gateway-0.3.0-y")
    removed = stale_releases(found, 2, ["/opt/vilms/gateway-0.1.0-live", "/opt/vilms/gateway-0.1.0-prev", ""])
    assert removed == ["/opt/vilms/gateway-0.3.0-y", "/opt/vilms/gateway-0.2.0-x"]


def test_keeping_fewer_than_the_protected_versions_removes_none_of_them() -> None:
    found = releases("gateway-0.1.0-prev", "gateway-0.2.0-new")
    assert stale_releases(found, 1, ["/opt/vilms/gateway-0.2.0-new", "/opt/vilms/gateway-0.1.0-prev"]) == []


def test_a_fresh_box_keeps_its_only_version() -> None:
    assert stale_releases(releases("gateway-0.1.0-a"), 3, ["/opt/vilms/gateway-0.1.0-a", "", ""]) == []


def in_place_venv(root: Path, install_id: str | None) -> Path:
    """A venv as the earlier release left it: made at gateway_venv, the gateway installed in place."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    dist = site / "vilms_edge_gateway-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vilms-edge-gateway\nVersion: 0.1.0\n")
    if install_id is not None:
        (venv / ".vilms-install-id").write_text(install_id + "\n")
    return venv


def migrate(tmp_path: Path, root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "migrate.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml")],
        "tasks": [
            {"ansible.builtin.include_tasks": str(ROLE / "tasks" / "install_migrate.yml")},
            {"ansible.builtin.copy": {"content": "{{ _gateway_live_dir | default('') }}",
                                      "dest": str(tmp_path / "live.txt"), "mode": "0644"},
             "check_mode": False},
        ],
    }]))
    return ansible_playbook(tmp_path, playbook, {"all": {"hosts": {"this-box": None}}},
                            {"gateway_venv": str(root / "venv"), "gateway_install_dir": str(root),
                             "role_path": str(ROLE)}, options=options)


def test_an_in_place_venv_becomes_the_live_version_behind_a_link(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    venv = in_place_venv(root, INSTALL_ID)
    run = migrate(tmp_path, root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]

    # Named as install.yml names that build: the same code is not installed again.
    versioned = root / f"gateway-0.1.0-{INSTALL_ID[:12]}"
    assert venv.is_symlink() and os.readlink(venv) == str(versioned)
    assert (tmp_path / "live.txt").read_text() == str(versioned)
    assert (versioned / ".vilms-install-id").read_text().strip() == INSTALL_ID
    # The interpreter behind the unit's path still finds the installed gateway.
    seen = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import importlib.metadata as m; print(m.version('vilms-edge-gateway'))"],
                          capture_output=True, text=True, timeout=60)
    assert seen.stdout.strip() == "0.1.0", seen.stderr


def test_an_unfinished_in_place_venv_is_kept_under_a_legacy_name(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    venv = in_place_venv(root, None)
    run = migrate(tmp_path, root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert os.readlink(venv) == str(root / "gateway-0.1.0-legacy")


def test_check_mode_moves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    venv = in_place_venv(root, INSTALL_ID)
    run = migrate(tmp_path, root, "--check")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert venv.is_dir() and not venv.is_symlink()
    assert sorted(p.name for p in root.iterdir()) == ["venv"]


def test_the_drills_regressed_build_cannot_chat_and_its_record_matches(tmp_path: Path) -> None:
    """testbed/broken_gateway_wheel.py, used by Molecule's rollback drill, on a wheel of the same shape."""
    source, dest = tmp_path / "wheelhouse", tmp_path / "regressed"
    source.mkdir()
    chat = b"class ChatResource:\n    def on_post(self, req, resp):\n        return 'answer'\n"
    with zipfile.ZipFile(source / "vilms_edge_gateway-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("gateway/resources/chat.py", chat)
        wheel.writestr("vilms_edge_gateway-0.1.0.dist-info/RECORD", "gateway/resources/chat.py,sha256=old,1\n")
    (source / "orjson-3.10.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"dependency")

    run = subprocess.run([sys.executable, str(ROLE.parent.parent / "testbed" / "broken_gateway_wheel.py"),
                          str(source), str(dest)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr

    assert (dest / "orjson-3.10.0-cp311-cp311-manylinux_2_17_x86_64.whl").read_bytes() == b"dependency"
    with zipfile.ZipFile(dest / "vilms_edge_gateway-0.1.0-py3-none-any.whl") as wheel:
        patched = wheel.read("gateway/resources/chat.py")
        record = wheel.read("vilms_edge_gateway-0.1.0.dist-info/RECORD").decode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(patched).digest()).rstrip(b"=").decode()
    assert record.splitlines() == [f"gateway/resources/chat.py,sha256={digest},{len(patched)}"]
    namespace: dict[str, Any] = {}
    exec(compile(patched, "chat.py", "exec"), namespace)
    try:
        namespace["ChatResource"]().on_post(None, None)
    except RuntimeError as error:
        assert "cannot chat" in str(error)
    else:
        raise AssertionError("the regressed build still answers a chat")
