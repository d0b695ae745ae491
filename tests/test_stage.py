"""playbooks/stage.yml: the fleet's gateway wheelhouse built on the controller, for boxes unlike it.

The network tests download from PyPI (the `network` mark; CI has PyPI): a Jetson's wheelhouse
(aarch64, Python 3.11) is staged on this x86_64 controller from an inventory whose boxes cannot be
reached, then pip proves it resolves offline for that box, and the gateway role then uses it offline.
Staged without the embeddings extra: aarch64 torch is a multi-GB download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.playbooks import REPO

JETSON_TARGET = "aarch64-py311"
# What pip on a JetPack 6 box (Ubuntu 22.04, glibc 2.35) accepts, written out independently of the role.
JETSON_PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(35, 16, -1)] + ["manylinux2014_aarch64"]


def lock_pins() -> dict[str, str]:
    """requirements.lock as name -> version; lines pip never applies (only torch needs them) left out."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and "never" in str(requirement.marker):
            continue
        pins[canonicalize_name(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return pins


def stage(tmp_path: Path, inventory: dict[str, Any], extra_vars: dict[str, Any],
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """ansible-playbook playbooks/stage.yml as an operator runs it: the inventory's boxes keep their own
    connection settings (unreachable addresses), so a task that touched a box would fail."""
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(inventory))
    variables = tmp_path / "stage-vars.yml"
    variables.write_text(yaml.safe_dump(extra_vars))
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(hosts), "-e", f"@{variables}", "playbooks/stage.yml"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "HOME": str(tmp_path), "PIP_CONFIG_FILE": "/dev/null", **(env or {})},
    )


def fleet(**platform_boxes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"all": {"children": {"edge": {"children": {
        platform: {"hosts": boxes} for platform, boxes in platform_boxes.items()}}}}}


def unreachable(address: str, **settings: Any) -> dict[str, Any]:
    return {"ansible_host": address, "ansible_user": "nobody", "ansible_connection": "ssh",
            "ansible_ssh_common_args": "-o ConnectTimeout=1", **settings}


def resolve_offline(wheelhouse: Path, tmp_path: Path) -> dict[str, Any]:
    """pip's own answer for a Jetson: what it installs from this wheelhouse alone, with no index."""
    gateway_wheel = next(wheelhouse.glob("vilms_edge_gateway-*.whl"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--find-links", str(wheelhouse),
         "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
         *[f"--platform={platform}" for platform in JETSON_PLATFORMS],
         "--target", str(tmp_path / "target"), "--report", "-", str(gateway_wheel)],
        capture_output=True, text=True, timeout=300, env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# ---------------------------------------------------------------------------------------------
# The tag list, against packaging's own
# ---------------------------------------------------------------------------------------------
def rendered_platform_args(tmp_path: Path, arch: str, manylinux: str) -> list[str]:
    playbook = tmp_path / "tags.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Tags", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(REPO / "roles/gateway/vars/main.yml")],
        "vars": {"_gateway_kind": {"arch": arch}, "gateway_manylinux": manylinux},
        "tasks": [{"name": "Show", "ansible.builtin.debug": {"msg": "{{ _gateway_pip_platform_args | to_json }}"}}],
    }]))
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "HOME": str(tmp_path), "ANSIBLE_STDOUT_CALLBACK": "json"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = json.loads(result.stdout)
    message = output["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    args: list[str] = json.loads(message) if isinstance(message, str) else message
    return args


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "manylinux", "glibc"), [("aarch64", "2_28", (2, 28)), ("x86_64", "2_28", (2, 28)),
                                                          ("aarch64", "2_35", (2, 35))])
def test_a_box_unlike_the_controller_is_fetched_every_manylinux_tag_pip_on_it_accepts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: str, manylinux: str, glibc: tuple[int, int]) -> None:
    from packaging import _manylinux

    # packaging's tags for a box of that CPU and glibc, as pip on the box computes them.
    monkeypatch.setattr(_manylinux, "_have_compatible_abi", lambda executable, archs: True)
    monkeypatch.setattr(_manylinux, "_get_glibc_version", lambda: glibc)
    expected = [f"--platform={tag}" for tag in _manylinux.platform_tags([arch])]

    assert rendered_platform_args(tmp_path, arch, manylinux) == expected
    assert f"--platform=manylinux2014_{arch}" in expected  # where orjson's aarch64 wheels are


# ---------------------------------------------------------------------------------------------
# Refusals before anything is built
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_target_on_python_310_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    result = stage(tmp_path, {"all": {"hosts": {"localhost": None}}}, {
        "vilms_stage_targets": ["aarch64-py310", "x86_64-py311"], "gateway_wheelhouse": str(wheelhouse)})

    assert result.returncode != 0
    assert "aarch64-py310" in result.stdout
    assert "needs 3.11 or newer" in result.stdout
    assert "gateway_python: python3.11" in result.stdout  # the way forward
    assert not wheelhouse.exists()  # not even the supported target was started


@pytest.mark.slow
def test_the_inventory_gives_each_box_its_target_and_an_old_python_is_refused_by_name(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    result = stage(tmp_path, fleet(
        jetson={"jetson-jp6": unreachable("192.0.2.10", gateway_python="python3.10")},
        cpu={"mini-pc": unreachable("192.0.2.30", vilms_python_version="3.12")},
    ), {"gateway_wheelhouse": str(wheelhouse)})

    assert result.returncode != 0
    assert "aarch64-py310 (jetson-jp6) has Python 3.10" in " ".join(result.stdout.split())
    assert "x86_64-py312" not in result.stdout  # the box that is fine is not blamed
    assert not wheelhouse.exists()


@pytest.mark.slow
def test_a_box_whose_python_the_inventory_does_not_say_is_named(tmp_path: Path) -> None:
    result = stage(tmp_path, fleet(dgpu={"gpu-server": unreachable("192.0.2.20")}),
                   {"gateway_wheelhouse": str(tmp_path / "wheelhouse")})

    assert result.returncode != 0
    assert "gpu-server" in result.stdout
    assert "vilms_python_version" in result.stdout
    assert "UNREACHABLE" not in result.stdout


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------
def test_the_lock_pins_every_dependency_of_pyproject_within_its_specifier() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    for line in project["dependencies"] + project["optional-dependencies"]["embeddings"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {requirement.specifier}: "
            "run make lock")


def test_the_lock_leaves_torch_to_each_platform() -> None:
    assert "torch" not in lock_pins()


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize(("arch", "python"), [("aarch64", "3.12"), ("x86_64", "3.11")])
def test_every_locked_version_has_a_wheel_for_each_kind_of_box(tmp_path: Path, arch: str, python: str) -> None:
    """A box of either CPU, on the oldest or the newest Python the fleet runs, can install every pin
    (the embeddings extra's included) from binary wheels: pip asked for that platform, from PyPI."""
    oldest = 17 if arch == "aarch64" else 5
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(35, oldest - 1, -1)] + [f"manylinux2014_{arch}"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
         "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
         *[f"--platform={platform}" for platform in platforms],
         "--target", str(tmp_path / "target"), "-r", str(REPO / "requirements.lock")],
        capture_output=True, text=True, timeout=600, env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# A Jetson's wheelhouse, staged from PyPI on this x86_64 controller
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jetson_stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp_path = tmp_path_factory.mktemp("stage")
    wheelhouse = tmp_path / "wheelhouse"
    result = stage(tmp_path, fleet(jetson={
        "jetson-a": unreachable("192.0.2.10", gateway_python="python3.11"),
        "jetson-b": unreachable("192.0.2.11", gateway_python="python3.11"),
    }), {"gateway_wheelhouse": str(wheelhouse)})
    return wheelhouse, result


@pytest.mark.network
@pytest.mark.slow
def test_a_jetson_wheelhouse_staged_on_x86_64_resolves_offline_for_aarch64_at_the_locked_versions(
        jetson_stage: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    wheelhouse, result = jetson_stage
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert sorted(path.name for path in wheelhouse.iterdir()) == [JETSON_TARGET]  # both boxes are one kind

    report = resolve_offline(wheelhouse / JETSON_TARGET, tmp_path)

    installed = {canonicalize_name(item["metadata"]["name"]): item for item in report["install"]}
    for compiled in ("orjson", "httptools", "pyyaml", "falcon"):
        url = installed[compiled]["download_info"]["url"]
        assert "aarch64" in url and "cp311" in url, url
    # orjson publishes no manylinux_2_28 wheel for aarch64: the tag that used to be the only one asked for.
    assert "manylinux2014_aarch64" in installed["orjson"]["download_info"]["url"]
    pins = lock_pins()
    for name, item in installed.items():
        if name != "vilms-edge-gateway":
            assert item["metadata"]["version"] == pins[name], name


@pytest.mark.network
@pytest.mark.slow
def test_the_gateway_role_uses_the_staged_wheelhouse_without_an_index_and_rebuilds_one_staged_for_other_needs(
        jetson_stage: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    wheelhouse, result = jetson_stage
    assert result.returncode == 0, result.stdout[-3000:]
    before = sorted(path.name for path in (wheelhouse / JETSON_TARGET).iterdir())

    def role_build(extra_requirements: list[str]) -> subprocess.CompletedProcess[str]:
        playbook = tmp_path / "build.yml"
        playbook.write_text(yaml.safe_dump([{
            "name": "Build as site.yml does", "hosts": "localhost", "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {"name": "The kind of box", "ansible.builtin.set_fact": {
                    "_gateway_build": {"target": JETSON_TARGET, "python": "3.11", "arch": "aarch64", "extras": []},
                    "_gateway_controller": {"stdout": "x86_64-py311"}}},
                {"name": "Build",
                 "ansible.builtin.include_role": {"name": "gateway", "tasks_from": "wheelhouse_build.yml"},
                 "vars": {"_gateway_build_target": JETSON_TARGET}},
            ],
        }]))
        # No index at all: anything that tried to download would fail.
        bin_dir = Path(sys.executable).parent
        return subprocess.run(
            [str(bin_dir / "ansible-playbook"), "-i", "localhost,", "-c", "local",
             "-e", json.dumps({"gateway_wheelhouse": str(wheelhouse),
                               "gateway_extra_requirements": extra_requirements}),
             str(playbook)],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1",
                 "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path),
                 "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1"})

    used = role_build([])
    assert used.returncode == 0, used.stdout[-3000:]
    assert "was staged for these boxes" in " ".join(used.stdout.split())
    assert sorted(path.name for path in (wheelhouse / JETSON_TARGET).iterdir()) == before

    # Another need than the staged one: the role builds (here it cannot: no index) instead of shipping it.
    rebuilt = role_build(["tomli-w"])
    assert rebuilt.returncode != 0
    assert "was staged for these boxes" not in " ".join(rebuilt.stdout.split())
    assert not (wheelhouse / JETSON_TARGET / ".vilms-staged").exists()
