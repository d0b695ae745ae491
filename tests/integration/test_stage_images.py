"""Engine images for a site with no registry: playbooks/stage.yml saves an image on the controller
(docker save), and the ollama role's image_archive.yml loads it on a box that lacks it (docker load).
The controller and the box are this machine's test-bed engine; the image is a tiny one built here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.testbed


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def probe_image(tmp_path: Path) -> Iterator[str]:
    if shutil.which("docker") is None or _docker("info").returncode != 0:
        pytest.skip("no Docker engine (run under testbed/engine.sh exec)")
    name = f"local/vilms-stage-probe:{uuid.uuid4().hex[:8]}"
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello").write_text("staged\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    built = _docker("build", "-q", "-t", name, str(context))
    assert built.returncode == 0, built.stderr
    yield name
    _docker("rmi", "-f", name)


def _playbook(tmp_path: Path, playbook: Path, extra_vars: dict[str, object]) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    variables = tmp_path / f"vars-{uuid.uuid4().hex[:6]}.yml"
    variables.write_text(yaml.safe_dump({"ansible_python_interpreter": sys.executable, **extra_vars}))
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", f"@{variables}", str(playbook)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path), "ANSIBLE_STDOUT_CALLBACK": "json"})


def _load(tmp_path: Path, image: str, archive: Path) -> dict[str, object]:
    playbook = tmp_path / "load.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Load as the ollama role does", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Load",
                   "ansible.builtin.include_role": {"name": "ollama", "tasks_from": "image_archive.yml"}}],
    }]))
    result = _playbook(tmp_path, playbook, {"_ollama_image": image, "ollama_image_archive": str(archive)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    stats: dict[str, object] = json.loads(result.stdout)["stats"]["localhost"]
    return stats


def test_an_image_saved_by_stage_is_loaded_on_a_box_that_lacks_it_and_only_then(
        tmp_path: Path, probe_image: str) -> None:
    images = tmp_path / "images"
    staged = _playbook(tmp_path, REPO / "playbooks/stage.yml", {
        "vilms_stage_targets": [], "vilms_stage_images": [{"image": probe_image}], "_stage_image_dir": str(images)})
    assert staged.returncode == 0, staged.stdout[-4000:] + staged.stderr[-2000:]
    archive = images / (probe_image.replace("/", "_").replace(":", "_") + ".tar")
    assert archive.is_file()

    assert _docker("rmi", probe_image).returncode == 0  # the box has never seen it
    first = _load(tmp_path, probe_image, archive)
    assert _docker("image", "inspect", probe_image).returncode == 0
    assert first["changed"] != 0
    assert not (Path("/var/tmp") / f"vilms-{archive.name}").exists()  # the copy does not stay on the box

    again = _load(tmp_path, probe_image, archive)
    assert again["changed"] == 0  # present: nothing copied, nothing loaded
