"""ansible-playbook on this machine, as the tests that run the roles' tasks outside Molecule call it:
a local connection with this interpreter, the repository's ansible.cfg, variables from a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def ansible_playbook(tmp_path: Path, playbook: Path, inventory: dict[str, Any], variables: dict[str, Any],
                     env: dict[str, str] | None = None, options: tuple[str, ...] = ()
                     ) -> subprocess.CompletedProcess[str]:
    """``inventory`` names its hosts; each gets ``ansible_connection: local`` and this interpreter."""
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(inventory))
    variables_file = tmp_path / "vars.yml"
    variables_file.write_text(yaml.safe_dump({
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, **variables}))
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(hosts), "-e", f"@{variables_file}", *options, str(playbook)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "HOME": str(tmp_path), **(env or {})},
    )
