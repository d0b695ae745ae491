"""The preflight play against this machine (local connection, nothing changed): bad inventory values
stop the run with a message naming each one, and good ones pass."""

from __future__ import annotations

import subprocess
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
