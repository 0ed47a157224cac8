"""templates/training: the TPU pod script's dry run, word for word; the Vertex AI job spec;
and no credentials anywhere under templates/."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml

from beam_jobs import cloud

ROOT = cloud.REPO_ROOT
SCRIPT = ROOT / "templates" / "training" / "tpu_pod.sh"
WHERE = ["--project", "my-project", "--zone", "us-central2-b"]


def _pod(*args: str, wheel_dir: str = "/wheels") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "WHEEL_DIR": wheel_dir},
    )


def test_tpu_pod_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_tpu_pod_dry_run_prints_the_exact_commands():
    data, workdir = "gs://my-bucket/training/v1", "gs://my-bucket/runs/large"
    result = _pod(*WHERE, "--data", data, "--workdir", workdir, "--dry-run", "--", "--steps=1000")
    assert result.returncode == 0, result.stderr
    where = "--project my-project --zone us-central2-b"
    install = (
        "set -e; python3 -m pip install --user --quiet uv==0.13.9; rm -rf ~/earthembed-venv; "
        "~/.local/bin/uv venv --python 3.11 ~/earthembed-venv; ~/.local/bin/uv pip install "
        "--python ~/earthembed-venv/bin/python -c ~/constraints.txt ~/earthembed-*.whl "
        "'jax[tpu]==0.10.2'"
    )
    train = (
        "export JAX_COORDINATOR_ADDRESS=WORKER0_IP:8476; cd ~; nohup "
        "~/earthembed-venv/bin/python -m model.main --config=large "
        f"--data={data} --workdir={workdir} --steps=1000 < /dev/null > ~/train.log 2>&1 &"
    )
    assert result.stdout.splitlines() == [
        f"gcloud compute tpus tpu-vm create earthembed-train {where} "
        "--accelerator-type v4-32 --version tpu-ubuntu2204-base",
        f"python3 -m pip wheel --no-deps --wheel-dir /wheels {ROOT}",
        "gcloud compute tpus tpu-vm scp '/wheels/earthembed-*.whl' "
        f"{ROOT}/constraints.txt earthembed-train: {where} --worker=all",
        f"gcloud compute tpus tpu-vm ssh earthembed-train {where} --worker=all --command "
        + shlex.quote(install),
        f"gcloud compute tpus tpu-vm describe earthembed-train {where} "
        "--format 'value(networkEndpoints[0].ipAddress)'",
        f"gcloud compute tpus tpu-vm ssh earthembed-train {where} --worker=all --command "
        + shlex.quote(train),
    ]


def test_tpu_pod_pins_come_from_constraints():
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    out = _pod(*WHERE, "--data", "gs://my-bucket/td", "--workdir", "gs://my-bucket/w", "--dry-run")
    assert f"uv=={pins['uv']};" in out.stdout
    assert f"jax[tpu]=={pins['jax']}" in out.stdout


def test_tpu_pod_v5e_runtime_and_delete():
    out = _pod(
        *WHERE[:2], "--zone", "us-west4-a", "--accelerator-type", "v5litepod-16",
        "--data", "gs://my-bucket/td", "--workdir", "gs://my-bucket/w", "--dry-run",
    ).stdout  # fmt: skip
    assert out.splitlines()[0].endswith(
        "--accelerator-type v5litepod-16 --version v2-alpha-tpuv5-lite"
    )
    out = _pod(*WHERE, "--delete", "--dry-run").stdout
    assert out == (
        "gcloud compute tpus tpu-vm delete earthembed-train --project my-project "
        "--zone us-central2-b --quiet\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "gs://my-bucket/../x", "--workdir", "gs://my-bucket/w"], "--data"),
        (["--data", "/local/td", "--workdir", "gs://my-bucket/w"], "--data"),
        (["--data", "gs://my-bucket/td", "--workdir", "gs://my-bucket/w;rm"], "--workdir"),
        (
            ["--data", "gs://my-bucket/td", "--workdir", "gs://my-bucket/w", "--", "--x=$(id)"],
            "unsafe",
        ),
    ],
)
def test_tpu_pod_rejects_bad_values_before_anything_runs(args, message):
    result = _pod(*WHERE, *args, "--dry-run")
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr


def test_vertex_job_spec():
    spec = yaml.safe_load((ROOT / "templates" / "training" / "vertex_gpu_job.yaml").read_text())
    (pool,) = spec["workerPoolSpecs"]
    assert pool["machineSpec"] == {
        "machineType": "a2-highgpu-1g",
        "acceleratorType": "NVIDIA_TESLA_A100",
        "acceleratorCount": 1,
    }
    assert pool["replicaCount"] == 1
    container = pool["containerSpec"]
    assert container["imageUri"] == cloud.image_uri(
        project="PROJECT", region="REGION", version="VERSION", gpu=True
    )
    assert container["command"] == ["python", "-m", "model.main"]
    assert container["args"] == [
        "--config=base",
        "--data=gs://BUCKET/training/v1",
        "--workdir=gs://BUCKET/runs/base",
    ]
    text = (ROOT / "templates" / "training" / "vertex_gpu_job.yaml").read_text()
    assert "gcloud ai custom-jobs create --project PROJECT --region REGION" in text
    assert "--config templates/training/vertex_gpu_job.yaml" in text


def test_no_credentials_under_templates():
    pattern = re.compile(
        r"BEGIN [A-Z ]*PRIVATE KEY|\"private_key\"|AIza[0-9A-Za-z_-]{35}|client_secret"
        r"|password\s*[:=]|GOOGLE_APPLICATION_CREDENTIALS",
        re.I,
    )
    files = [p for p in (ROOT / "templates").rglob("*") if p.is_file()]
    files += [ROOT / "beam_jobs" / "cloud.py", ROOT / ".dockerignore"]
    for path in files:
        assert not pattern.search(path.read_text()), path
