"""The gateway role's wheelhouse pruning (roles/gateway/tasks/wheelhouse_prune.yml), run by
ansible-playbook on this machine against a wheelhouse of small hand-made wheels: what pip, run dry
for the box's CPU and Python, would not install goes; everything it would install stays.

The Molecule scenarios prune for boxes like the controller; only here is a box of another CPU and
Python (a Jetson) pruned."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.playbooks import REPO, ansible_playbook

pytestmark = pytest.mark.slow

CONTROLLER = "x86_64-py311"


def wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> str:
    """A pure-Python wheel with nothing but the metadata pip's resolver reads."""
    filename = f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    with zipfile.ZipFile(directory / filename, "w") as archive:
        archive.writestr(f"{dist_info}/METADATA", metadata)
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    return filename


def prune(tmp_path: Path, target: str, kind: dict[str, str], env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """The role's prune tasks for one kind of box, with the role's own computed values (vars/main.yml)
    and the facts wheelhouse_build.yml would have set."""
    playbook = tmp_path / "prune.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Prune", "hosts": "all", "gather_facts": False,
        "vars_files": [str(REPO / "roles/gateway/vars/main.yml")],
        "tasks": [{"name": "Prune",
                   "ansible.builtin.include_tasks": str(REPO / "roles/gateway/tasks/wheelhouse_prune.yml")}],
    }]))
    return ansible_playbook(tmp_path, playbook, {"all": {"hosts": {"localhost": None}}}, {
        "ansible_become": False,
        "gateway_package_name": "vilms-demo-gateway",
        "gateway_wheelhouse": str(tmp_path / "wheelhouse"),
        "gateway_manylinux": "2_28",
        "gateway_extra_requirements": [],
        "_gateway_build_target": target,
        "_gateway_controller": {"stdout": CONTROLLER + "\n"},
        "_gateway_kind": kind,
        "_gateway_kind_extras": [],
    }, env={"PIP_NO_INDEX": "1", **(env or {})})


def upgraded_wheelhouse(directory: Path, gateway_requires: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """A wheelhouse after an upgrade: (the wheels a box installs, the ones left behind)."""
    directory.mkdir(parents=True)
    current = {
        wheel(directory, "vilms_demo_gateway", "2.0", gateway_requires),
        wheel(directory, "demo_dep", "2.0"),
        wheel(directory, "torchlike", "2.13.0+cpu"),  # pip names it in a quoted URL: torchlike-2.13.0%2Bcpu
    }
    stale = {wheel(directory, "demo_dep", "1.0"), wheel(directory, "retired_dep", "0.1")}
    return current, stale


@pytest.mark.parametrize(("target", "kind"), [
    ("aarch64-py312", {"arch": "aarch64", "python": "3.12"}),  # a Jetson: pip asked for its CPU and Python
    (CONTROLLER, {"arch": "x86_64", "python": "3.11"}),
], ids=["box-unlike-the-controller", "box-like-the-controller"])
def test_what_the_box_would_not_install_is_removed_and_nothing_else(
        tmp_path: Path, target: str, kind: dict[str, str]) -> None:
    directory = tmp_path / "wheelhouse" / target
    current, _stale = upgraded_wheelhouse(directory, ("demo-dep>=2", "torchlike==2.13.0+cpu"))

    run = prune(tmp_path, target, kind)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {path.name for path in directory.iterdir()} == current


def test_a_wheelhouse_pip_cannot_resolve_is_left_whole(tmp_path: Path) -> None:
    directory = tmp_path / "wheelhouse" / CONTROLLER
    current, stale = upgraded_wheelhouse(directory, ("demo-dep>=2", "missing-dep"))

    run = prune(tmp_path, CONTROLLER, {"arch": "x86_64", "python": "3.11"})

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {path.name for path in directory.iterdir()} == current | stale
    assert "was not pruned: pip could not resolve it dry" in run.stdout
    assert "missing-dep" in run.stdout


def test_the_controllers_own_pip_settings_do_not_decide_what_stays(tmp_path: Path) -> None:
    """A controller whose pip looks in a directory of its own (an air-gapped site's find-links) must
    not have the wheelhouse's wheels judged against that directory's newer versions: the box never
    sees it."""
    directory = tmp_path / "wheelhouse" / CONTROLLER
    current, _stale = upgraded_wheelhouse(directory, ("demo-dep>=2", "torchlike==2.13.0+cpu"))
    site_wheels = tmp_path / "site-wheels"
    site_wheels.mkdir()
    wheel(site_wheels, "demo_dep", "3.0")
    user_config = tmp_path / ".config" / "pip" / "pip.conf"
    user_config.parent.mkdir(parents=True)
    user_config.write_text(f"[global]\nfind-links = {site_wheels}\n")

    run = prune(tmp_path, CONTROLLER, {"arch": "x86_64", "python": "3.11"}, env={"PIP_FIND_LINKS": str(site_wheels)})

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {path.name for path in directory.iterdir()} == current
