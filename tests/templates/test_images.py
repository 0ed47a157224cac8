"""The flex-template images: hadolint, pins against constraints.txt, Cloud Build config, build
context, and the image's requirement set (a fresh venv from the same context + pip check)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from beam_jobs import cloud

ROOT = cloud.REPO_ROOT
DOCKERFILES = [ROOT / cloud.DOCKERFILE, ROOT / cloud.DOCKERFILE_GPU]
BIN = Path(sys.executable).parent


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _context_sources(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile copies (COPY without --from)."""
    sources = []
    for word, rest in _instructions(dockerfile):
        if word == "COPY" and not rest.startswith("--from"):
            *srcs, _dest = rest.split()
            sources += srcs
    return sources


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing from the venv ({BIN}): install the [test] extra")
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run(
        [str(_tool("hadolint")), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = subprocess.run(
        [str(_tool("hadolint")), "--no-color", str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_and_entry_points(dockerfile):
    pins = _pins()
    steps = _instructions(dockerfile)
    images = [rest.split()[0] for word, rest in steps if word == "FROM"]
    images += [m.group(1) for word, rest in steps for m in [re.match(r"--from=(\S+)", rest)] if m]
    for image in images:  # every base image pinned by a tag, never latest
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image
    assert images[0].startswith("python:3.11.") and "slim" in images[0]
    assert f"apache/beam_python3.11_sdk:{pins['apache-beam']}" in images
    assert any(
        i.startswith("gcr.io/dataflow-templates-base/python311-template-launcher-base:")
        for i in images
    )
    copies = [rest for word, rest in steps if word == "COPY"]
    assert (
        f"--from=apache/beam_python3.11_sdk:{pins['apache-beam']} /opt/apache/beam "
        "/opt/apache/beam" in copies
    )
    assert any(
        c.endswith(
            "/opt/google/dataflow/python_template_launcher "
            "/opt/google/dataflow/python_template_launcher"
        )
        for c in copies
    )
    (install,) = [rest for word, rest in steps if word == "RUN"]
    assert install.startswith("pip install --no-cache-dir -c constraints.txt . ")
    assert install.endswith("&& pip check")
    if dockerfile.name.endswith(".gpu"):
        assert f'"jax[cuda12]=={pins["jax"]}"' in install.split()
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/template/templates/${JOB}/main.py" in env
    (arg,) = [rest for word, rest in steps if word == "ARG"]
    assert (ROOT / "templates" / arg.removeprefix("JOB=") / "main.py").is_file()
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') == steps[-1]


def test_cloudbuild_tags_the_image_once_per_template():
    config = yaml.safe_load((ROOT / cloud.CLOUDBUILD_CONFIG).read_text())
    steps = {s["id"]: s["args"] for s in config["steps"]}
    assert steps["image"] == ["build", "--file", "${_DOCKERFILE}", "--tag", "${_IMAGE}", "."]
    for job in cloud.JOBS:
        assert steps[job] == [
            "build", "--file", "${_DOCKERFILE}", "--build-arg", f"JOB={job}",
            "--tag", f"${{_IMAGE}}-{job}", ".",
        ]  # fmt: skip
    assert config["images"] == ["${_IMAGE}"] + [f"${{_IMAGE}}-{job}" for job in cloud.JOBS]
    # what `earthembed cloud build` substitutes is what the config uses
    (submit, *_) = cloud.build_commands(
        ["simulate"], project="p-123456", region="r-a1", bucket="bkt", version="1"
    )
    subs = dict(kv.split("=", 1) for kv in submit[submit.index("--substitutions") + 1].split(","))
    assert set(subs) == {"_IMAGE", "_DOCKERFILE"}
    assert subs["_IMAGE"] + "-simulate" == cloud.image_uri(
        project="p-123456", region="r-a1", version="1", job="simulate"
    )


def test_dockerignore_admits_exactly_what_the_images_copy():
    lines = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert lines[0] == "*"  # an allowlist: .venv, demo_out, caches never enter the context
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for dockerfile in DOCKERFILES:
        assert set(_context_sources(dockerfile)) == allowed


def _uv(args: list[str], **kw) -> subprocess.CompletedProcess:
    """uv from its cache when it can (fast, offline), else from the index."""
    uv = str(_tool("uv"))
    result = subprocess.run([uv, *args, "--offline"], capture_output=True, text=True, **kw)
    if result.returncode != 0:
        result = subprocess.run([uv, *args], capture_output=True, text=True, **kw)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def build_context(tmp_path_factory) -> Path:
    """What `docker build` sees: the Dockerfile's COPY sources, without caches."""
    ctx = tmp_path_factory.mktemp("context")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src in _context_sources(DOCKERFILES[0]):
        path = ROOT / src
        if path.is_dir():
            shutil.copytree(path, ctx / src, ignore=ignore)
        else:
            shutil.copy2(path, ctx / src)
    return ctx


def test_image_requirements_pass_pip_check(build_context, tmp_path):
    """The image's `pip install -c constraints.txt . && pip check`, in a fresh Python 3.11 venv
    (about 10 s with uv's cache warm)."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _uv(["pip", "install", "-q", "--python", str(python), "-c", "constraints.txt", "."],
        cwd=build_context)  # fmt: skip
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "No broken requirements found."
    pins = _pins()
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("apache-beam", "jax", "tensorflow", "flax"):
        assert f"{name}=={pins[name]}" in freeze.lower()


def test_gpu_requirement_set_resolves(build_context, tmp_path):
    """Dockerfile.gpu's set (the package + jax[cuda12] at the pinned jax) resolves for linux."""
    (req := tmp_path / "gpu.in").write_text(f"{build_context}\njax[cuda12]=={_pins()['jax']}\n")
    result = _uv(
        ["pip", "compile", "--no-header", "--python-version", "3.11",
         "--python-platform", "x86_64-manylinux_2_28",
         "-c", str(build_context / "constraints.txt"), str(req)],
    )  # fmt: skip
    jax = _pins()["jax"]
    for line in (f"jax=={jax}", f"jaxlib=={jax}", f"jax-cuda12-plugin=={jax}"):
        assert line in result.stdout.splitlines()
    assert re.search(r"^nvidia-cudnn-cu12==", result.stdout, re.M)
