"""The preflight play against this machine (local connection, nothing changed): bad inventory values
stop the run with a message naming each one, and good ones pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.playbooks import REPO, ansible_playbook

pytestmark = pytest.mark.slow


def preflight(tmp_path: Path, extra_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # Preflight reads the box as root via become; here the test runs as whoever runs pytest.
    return ansible_playbook(tmp_path, REPO / "playbooks" / "preflight.yml",
                            {"edge": {"children": {"cpu": {"hosts": {"this-box": None}}}}},
                            {"ansible_become": False, "platform_override": "cpu", **extra_vars})


def test_bad_image_fetch_networks_stop_the_run_before_any_change(tmp_path: Path) -> None:
    run = preflight(tmp_path, {"gateway_image_fetch_networks": ["192.168.10.0/24", "cameras.lan", "fd00::/8"]})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "gateway_image_fetch_networks: `cameras.lan` is not an IP network" in output
    assert "192.168.10.0/24` is not" not in output and "fd00::/8` is not" not in output


def test_good_image_fetch_networks_pass(tmp_path: Path) -> None:
    run = preflight(tmp_path, {"gateway_image_fetch_networks": ["192.168.10.0/24", "10.0.0.7", "fd00::/8"],
                               "gateway_api_keys": ["sk-preflight-0123456789"]})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failed=0" in run.stdout


# -- API keys: a box is never opened by accident ------------------------------------------------
KEY = "sk-preflight-0123456789"


def preflight_with_inventory(tmp_path: Path, extra_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """As ``preflight``, with the repository's group_vars beside the hosts file (edge.yml included)."""
    (tmp_path / "group_vars").symlink_to(REPO / "inventory" / "group_vars")
    return preflight(tmp_path, extra_vars)


@pytest.mark.parametrize("vault", [{}, {"vault_gateway_api_key": [KEY]}], ids=["no vault", "misspelt"])
def test_a_missing_or_misspelt_vault_variable_stops_the_run(tmp_path: Path, vault: dict[str, Any]) -> None:
    run = preflight_with_inventory(tmp_path, vault)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "vault_gateway_api_keys is not defined" in output
    assert "inventory/group_vars/all/vault.yml" in output and "gateway_allow_anonymous: true" in output


def test_no_key_on_a_gateway_beyond_loopback_stops_the_run(tmp_path: Path) -> None:
    run = preflight_with_inventory(tmp_path, {"vault_gateway_api_keys": []})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "the gateway would listen on 0.0.0.0:8989 with no API key" in output
    assert "vault_gateway_api_keys in inventory/group_vars/all/vault.yml" in output


@pytest.mark.parametrize("variables", [
    {"vault_gateway_api_keys": [KEY]},
    {"gateway_allow_anonymous": True},
    {"vault_gateway_api_keys": [], "gateway_host": "127.0.0.1"},
], ids=["keys", "anonymous on purpose", "loopback only"])
def test_keys_or_a_deliberate_opt_out_pass(tmp_path: Path, variables: dict[str, Any]) -> None:
    run = preflight_with_inventory(tmp_path, variables)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failed=0" in run.stdout


# -- Real boxes: L4T, Python, GPU memory, engine versions, Jetson embeddings --------------------
# Each case is a box as preflight sees it (platform and L4T forced), refused before any change.
OLLAMA_LLM = {"name": "qwen3:4b-instruct", "type": "llm", "engine": "ollama"}
QWEN3_VL = {"name": "qwen3-vl:4b-instruct", "type": "vlm", "engine": "ollama", "min_engine_version": "0.12.7"}
JETSON_R36_4 = {"platform_override": "jetson", "platform_l4t_release_override": "36.4.0",
                "gateway_python": sys.executable}


def vllm_model(**keys: Any) -> dict[str, Any]:
    return {"name": "Qwen/Qwen3-0.6B", "type": "llm", "engine": "vllm", **keys}


REFUSED = {
    "dustynv r36.4 image on an R36.3 host": (
        {**JETSON_R36_4, "platform_l4t_release_override": "36.3.0", "ollama_jetson_image_source": "dustynv",
         "ollama_jetson_images": {"36": "dustynv/ollama:r36.4.0"}},
        ["image dustynv/ollama:r36.4.0 is built for L4T R36.4 and does not run on this box's L4T R36.3.0"]),
    "no dustynv image for the release": (
        {**JETSON_R36_4, "platform_l4t_release_override": "36.3.0", "ollama_jetson_image_source": "dustynv"},
        ["ollama_jetson_images has no image for L4T R36.3.0"]),
    "jetson without an L4T release": (
        {**JETSON_R36_4, "platform_l4t_release_override": ""},
        ["the L4T release of this Jetson is unknown"]),
    "JetPack 5 without python3.11": (
        {**JETSON_R36_4, "platform_l4t_release_override": "35.4.1", "gateway_python": "python3.11-not-installed"},
        ["JetPack 5 / Ubuntu 20.04 has no python3.11 package", "set gateway_python to it", "JetPack 6"]),
    "vLLM at its default share beside Ollama": (
        {"platform_override": "dgpu", "vilms_models": [OLLAMA_LLM, vllm_model()]},
        ["GPU 0 memory is overcommitted: Qwen/Qwen3-0.6B 0.9 + Ollama 0.2 = 1.1"]),
    "two vLLM models on GPU 1": (
        {"platform_override": "dgpu",
         "vilms_models": [vllm_model(gpus=[1], gpu_memory_utilization=0.6),
                          vllm_model(name="Qwen/Qwen3-1.7B", gpus=[1], gpu_memory_utilization=0.5)]},
        ["GPU 1 memory is overcommitted: Qwen/Qwen3-0.6B 0.6 + Qwen/Qwen3-1.7B 0.5 = 1.1"]),
    "qwen3-vl on Ollama 0.12.6": (
        {"vilms_models": [OLLAMA_LLM, QWEN3_VL], "ollama_version": "0.12.6"},
        ["model qwen3-vl:4b-instruct needs ollama 0.12.7 or later, but the image is ollama/ollama:0.12.6"]),
    "qwen3-vl on a dustynv image": (
        {**JETSON_R36_4, "vilms_models": [QWEN3_VL], "ollama_jetson_image_source": "dustynv"},
        ["needs ollama 0.12.7 or later, and the tag of image dustynv/ollama:r36.4.0 names no release"]),
    "CUDA embeddings on a Jetson": (
        {**JETSON_R36_4, "gateway_embedding_enabled": True, "gateway_embedding_device": "cuda"},
        ["gateway_embedding_device is cuda on a Jetson", "gateway_embedding_base_url: http://127.0.0.1:11434/v1"]),
}


@pytest.mark.parametrize("variables,messages", REFUSED.values(), ids=REFUSED.keys())
def test_a_box_that_cannot_work_is_refused_before_any_change(tmp_path: Path, variables: dict[str, Any],
                                                             messages: list[str]) -> None:
    run = preflight(tmp_path, {"gateway_api_keys": [KEY], **variables})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    for message in messages:
        assert message in output, output[-3000:]


PASSES = {
    "JetPack 6.1 with the official image and qwen3-vl": {**JETSON_R36_4, "vilms_models": [OLLAMA_LLM, QWEN3_VL]},
    "dustynv r36.4 image on an R36.4 host": {**JETSON_R36_4, "ollama_jetson_image_source": "dustynv",
                                             "vilms_models": [OLLAMA_LLM]},
    "vLLM shares that fit, one model per GPU": {
        "platform_override": "dgpu",
        "vilms_models": [OLLAMA_LLM, QWEN3_VL, vllm_model(gpu_memory_utilization=0.7),
                         vllm_model(name="Qwen/Qwen3-1.7B", gpus=[1])], "ollama_gpus": [0]},
}


@pytest.mark.parametrize("variables", PASSES.values(), ids=PASSES.keys())
def test_a_box_that_can_work_passes(tmp_path: Path, variables: dict[str, Any]) -> None:
    run = preflight(tmp_path, {"gateway_api_keys": [KEY], **variables})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failed=0" in run.stdout


# Docker's version and the kernel's raw table as the probes would report them (extra vars beat
# registered results), on a box whose real Docker and kernel are whatever this machine has.
NO_RAW = {"_preflight_docker_probe": {"rc": 0, "stdout": "28.0.1"}, "_preflight_raw_probe": {"rc": 1, "stdout": ""}}


def test_docker_28_without_iptable_raw_is_refused_with_both_ways_out(tmp_path: Path) -> None:
    run = preflight(tmp_path, {"gateway_api_keys": [KEY], **JETSON_R36_4, **NO_RAW})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "Docker 28.0.1 programs iptables \"raw\" rules" in output and "moby#49557" in output
    assert "hold Docker at 27.x" in output and "docker_network_no_iptables_raw: true" in output


@pytest.mark.parametrize("variables", [
    {**NO_RAW, "docker_network_no_iptables_raw": True},
    {**NO_RAW, "_preflight_docker_probe": {"rc": 0, "stdout": "27.5.1"}},
], ids=["opted out", "docker 27"])
def test_docker_28_opt_out_or_docker_27_pass(tmp_path: Path, variables: dict[str, Any]) -> None:
    run = preflight(tmp_path, {"gateway_api_keys": [KEY], **JETSON_R36_4, **variables})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


# -- The gateway's Python: chosen per OS by the inventory, checked on the box before any change ----
def preflight_in_group(tmp_path: Path, group: str, extra_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The preflight play for one box in ``group`` with the repository's group_vars (its Python rule)."""
    (tmp_path / "group_vars").symlink_to(REPO / "inventory" / "group_vars")
    return ansible_playbook(tmp_path, REPO / "playbooks" / "preflight.yml",
                            {"edge": {"children": {group: {"hosts": {"this-box": None}}}}},
                            {"ansible_become": False, "platform_override": group, "vault_gateway_api_keys": [KEY],
                             **extra_vars})


# What the probe says when the interpreter is not on the box (extra vars beat registered results).
NO_INTERPRETER = {"_preflight_python_probe": {"rc": 2, "stdout": "", "msg": "[Errno 2] No such file or directory"}}


@pytest.mark.parametrize("group,os_release,python,packages", [
    ("dgpu", "Ubuntu 22.04", "python3.11", ["python3.11", "python3.11-venv"]),
    ("cpu", "Ubuntu 22.04", "python3.11", ["python3.11", "python3.11-venv"]),
    ("cpu", "Debian 12", "python3", ["python3-venv"]),
    ("dgpu", "Ubuntu 24.04", "python3", ["python3-venv"]),
])
def test_the_inventory_gives_ubuntu_22_04_boxes_python_3_11(tmp_path: Path, group: str, os_release: str,
                                                            python: str, packages: list[str]) -> None:
    (tmp_path / "group_vars").symlink_to(REPO / "inventory" / "group_vars")
    playbook = tmp_path / "show.yml"
    playbook.write_text(
        "- hosts: edge\n  gather_facts: true\n  roles: [platform]\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"CHOSEN {{ gateway_python }} {{ gateway_os_packages | join(',') }}\"\n")
    run = ansible_playbook(tmp_path, playbook, {"edge": {"children": {group: {"hosts": {"this-box": None}}}}},
                           {"ansible_become": False, "platform_override": group, "platform_os_override": os_release})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"CHOSEN {python} {','.join(packages)}" in run.stdout, run.stdout[-3000:]


@pytest.mark.parametrize("group", ["dgpu", "cpu"])
def test_ubuntu_22_04_without_python_3_11_or_a_candidate_is_refused_in_preflight(tmp_path: Path, group: str) -> None:
    run = preflight_in_group(tmp_path, group, {"platform_os_override": "Ubuntu 22.04", **NO_INTERPRETER,
                                               "_preflight_python_apt_probe": {"results": [
                                                   {"item": "python3.11", "rc": 0, "stdout": ""},
                                                   {"item": "python3.11-venv", "rc": 0, "stdout": ""}]}})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "python3.11 (gateway_python) is not on this box, and apt has no installation candidate for" \
           " python3.11, python3.11-venv" in output, output[-3000:]
    assert "enable it and run apt-get update" in output


def test_a_missing_interpreter_apt_can_install_passes(tmp_path: Path) -> None:
    # This machine's apt lists offer python3.11 and python3.11-venv (Debian 12), as jammy-updates does.
    run = preflight_in_group(tmp_path, "dgpu", {"platform_os_override": "Ubuntu 22.04", **NO_INTERPRETER})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failed=0" in run.stdout


def test_an_interpreter_apt_has_never_heard_of_is_refused(tmp_path: Path) -> None:
    # Real probes on this machine: no python3.99 on PATH, and apt-cache policy prints nothing for it.
    run = preflight_in_group(tmp_path, "cpu", {"gateway_python": "python3.99",
                                               "gateway_os_packages": ["python3.99", "python3.99-venv"]})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "python3.99 (gateway_python) is not on this box, and apt has no installation candidate for" \
           " python3.99, python3.99-venv (gateway_os_packages)" in output, output[-3000:]


def test_a_3_11_system_python_passes_unchanged(tmp_path: Path) -> None:
    # This machine is Debian 12: the inventory keeps python3 (3.11), which the probe finds.
    run = preflight_in_group(tmp_path, "cpu", {})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failed=0" in run.stdout


def test_jetpack_5_is_refused_with_its_own_way_forward_first(tmp_path: Path) -> None:
    run = preflight_in_group(tmp_path, "jetson", {"platform_l4t_release_override": "35.4.1", **NO_INTERPRETER,
                                                  "_preflight_python_apt_probe": {"results": []}})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "JetPack 5 / Ubuntu 20.04 has no python3.11 package" in output, output[-3000:]
    assert "apt has no installation candidate" not in output
