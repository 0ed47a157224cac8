"""`earthembed cloud`: gcloud commands as pure functions, parameter checks, the dry run."""

from __future__ import annotations

import argparse
import shlex

import pytest

from beam_jobs import build_training_data, cli, cloud, simulate

WHERE = ["--project", "my-project", "--region", "europe-west1", "--bucket", "my-bucket"]
IMAGE = "europe-west1-docker.pkg.dev/my-project/earthembed/earthembed"


def _dry_run(capsys, *argv: str) -> str:
    assert cloud.run([*argv, *WHERE, "--image-version", "0.1.0", "--dry-run"]) == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------------------------- names


def test_image_and_template_names():
    kw = dict(project="my-project", region="europe-west1", version="0.1.0")
    assert cloud.image_uri(**kw) == f"{IMAGE}:0.1.0"
    assert cloud.image_uri(**kw, job="embed") == f"{IMAGE}:0.1.0-embed"
    assert cloud.image_uri(**kw, gpu=True, job="embed") == f"{IMAGE}-gpu:0.1.0-embed"
    assert cloud.template_gcs_path("b", "embed") == "gs://b/templates/embed.json"
    assert cloud.template_gcs_path("b", "embed", gpu=True) == "gs://b/templates/embed-gpu.json"
    assert cloud.normalize_job("build-training-data") == "build_training_data"
    with pytest.raises(cloud.CloudError, match="unknown job 'frobnicate'"):
        cloud.normalize_job("frobnicate")


# ---------------------------------------------------------------------------------- parameters


def test_parameters_from_pairs_and_trailing_options():
    assert cloud.parameter_pairs(["bbox=4.3,50.8,4.5,50.9", "out=gs://b/x=y"]) == {
        "bbox": "4.3,50.8,4.5,50.9",
        "out": "gs://b/x=y",
    }
    tokens = ["--num-samples", "8", "--verbose", "--out=gs://b/x", "--bbox", "-70.5,-10,-70,-9"]
    assert cloud.trailing_parameters(tokens) == {
        "num_samples": "8",
        "verbose": "true",
        "out": "gs://b/x",
        "bbox": "-70.5,-10,-70,-9",
    }
    with pytest.raises(cloud.CloudError, match="key=value"):
        cloud.parameter_pairs(["years"])
    with pytest.raises(cloud.CloudError, match="'years' given twice"):
        cloud.trailing_parameters(["--years", "2023", "--years=2024"])
    with pytest.raises(cloud.CloudError, match="unexpected argument 'stray'"):
        cloud.trailing_parameters(["stray"])


def test_validate_parameters_names_the_culprit():
    meta = cloud.load_metadata("build_training_data")
    ok = cloud.validate_parameters(
        meta, {"out": "gs://my-bucket/td", "years": "2023", "stac": "gs://my-bucket/c.json"}
    )
    assert list(ok) == ["stac", "years", "out"]  # the metadata's order
    with pytest.raises(cloud.CloudError, match="unknown parameter 'num_sample' "):
        cloud.validate_parameters(meta, {"out": "gs://my-bucket/td", "num_sample": "8"})
    with pytest.raises(cloud.CloudError, match="parameter 'out' is required"):
        cloud.validate_parameters(meta, {"years": "2023"})
    with pytest.raises(cloud.CloudError, match="parameter 'years': '20x3' does not match"):
        cloud.validate_parameters(meta, {"out": "gs://my-bucket/td", "years": "20x3"})
    with pytest.raises(cloud.CloudError, match="parameter 'out': 'gs://my-bucket/../x'"):
        cloud.validate_parameters(meta, {"out": "gs://my-bucket/../x"})


def test_gcloud_parameters_escape_commas():
    assert cloud.gcloud_parameters({"year": "2023", "out": "gs://b/x"}) == "year=2023,out=gs://b/x"
    assert (
        cloud.gcloud_parameters({"bbox": "4.3,50.8,4.5,50.9", "year": "2023"})
        == "^~^bbox=4.3,50.8,4.5,50.9~year=2023"
    )
    # a value holding the first delimiter: the next free one
    assert cloud.gcloud_parameters({"a": "1,2", "b": "x~y"}) == "^|^a=1,2|b=x~y"


# ---------------------------------------------------------------------------------- dry run


def test_dry_run_build_prints_the_exact_commands(capsys):
    out = _dry_run(capsys, "build", "build-training-data")
    assert out == (
        "gcloud builds submit --project my-project --region europe-west1 "
        "--config templates/cloudbuild.yaml "
        f"--substitutions _IMAGE={IMAGE}:0.1.0,_DOCKERFILE=templates/Dockerfile .\n"
        "gcloud dataflow flex-template build gs://my-bucket/templates/build_training_data.json "
        f"--project my-project --image {IMAGE}:0.1.0-build_training_data --sdk-language PYTHON "
        "--metadata-file templates/build_training_data/metadata.json\n"
    )


def test_dry_run_build_all_gpu_skips_the_image_on_request(capsys):
    out = _dry_run(capsys, "build", "all", "--gpu", "--skip-image")
    assert out == "".join(
        f"gcloud dataflow flex-template build gs://my-bucket/templates/{job}-gpu.json "
        f"--project my-project --image {IMAGE}-gpu:0.1.0-{job} --sdk-language PYTHON "
        f"--metadata-file templates/{job}/metadata.json\n"
        for job in ("embed", "embed_points")
    )


def test_dry_run_run_prints_the_exact_command(capsys):
    out = _dry_run(
        capsys,
        "run",
        "build_training_data",
        "--job-name",
        "td-v1",
        "--service-account",
        "dataflow-worker@my-project.iam.gserviceaccount.com",
        "--network",
        "vpc",
        "--subnetwork",
        "regions/europe-west1/subnetworks/sub",
        "--max-workers",
        "50",
        "--machine-type",
        "n1-standard-4",
        "--parameters",
        "years=2021-2023",
        "--stac",
        "gs://my-bucket/sim/catalog.json",
        "--bbox",
        "4.3,50.8,4.5,50.9",
        "--num-samples",
        "100000",
        "--out",
        "gs://my-bucket/training/v1",
        "--overwrite",
    )
    assert out == (
        "gcloud dataflow flex-template run td-v1 --project my-project "
        "--template-file-gcs-location gs://my-bucket/templates/build_training_data.json "
        "--region europe-west1 --staging-location gs://my-bucket/staging "
        "--temp-location gs://my-bucket/temp "
        "--service-account-email dataflow-worker@my-project.iam.gserviceaccount.com "
        "--network vpc --subnetwork regions/europe-west1/subnetworks/sub --max-workers 50 "
        "--worker-machine-type n1-standard-4 "
        "--parameters '^~^stac=gs://my-bucket/sim/catalog.json~bbox=4.3,50.8,4.5,50.9"
        "~years=2021-2023~num_samples=100000~out=gs://my-bucket/training/v1~overwrite=true"
        f"~sdk_container_image={IMAGE}:0.1.0-build_training_data'\n"
    )
    # what the shell hands gcloud: the ^~^ list as one argument
    assert shlex.split(out)[-1].startswith("^~^stac=")


def test_dry_run_gpu_embed_asks_for_an_l4_on_g2(capsys):
    out = _dry_run(
        capsys,
        "run",
        "embed",
        "--gpu",
        "--job-name",
        "emb",
        "--stac",
        "gs://my-bucket/sim/catalog.json",
        "--year",
        "2023",
        "--bbox",
        "4.3,50.8,4.5,50.9",
        "--out",
        "gs://my-bucket/emb/2023",
    )
    assert out == (
        "gcloud dataflow flex-template run emb --project my-project "
        "--template-file-gcs-location gs://my-bucket/templates/embed-gpu.json "
        "--region europe-west1 --staging-location gs://my-bucket/staging "
        "--temp-location gs://my-bucket/temp "
        "--additional-experiments 'worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver' "
        "--worker-machine-type g2-standard-8 "
        "--parameters '^~^stac=gs://my-bucket/sim/catalog.json~bbox=4.3,50.8,4.5,50.9~year=2023"
        f"~out=gs://my-bucket/emb/2023~sdk_container_image={IMAGE}-gpu:0.1.0-embed'\n"
    )


# ---------------------------------------------------------------------------------- errors


API = "https://earth-search.aws.element84.com/v1"
# embed's required parameters but the catalog: a period, a bbox and --out
EMB = (
    "--period",
    "2023-01-01/2024-01-01",
    "--bbox",
    "4.3,50.8,4.5,50.9",
    "--out",
    "gs://my-bucket/e",
)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "simulate", "--out", "/tmp/sim"], "parameter 'out': '/tmp/sim' does not match"),
        (
            ["run", "simulate", "--out", "gs://my-bucket/s", "--region", "us-central1"],
            "--region given",
        ),
        (["run", "simulate", "--sim-region", "demo"], "unknown parameter 'sim_region'"),
        (["run", "simulate", "--out", "gs://my-bucket/s", "--gpu"], "--gpu applies to embed"),
        (["run", "embed", "--gpu", "--machine-type", "n1-standard-4"], "G2 machine type"),
        (["run", "simulate", "--outt", "gs://my-bucket/s"], "unknown parameter 'outt'"),
        (["build", "simulate", "--years", "2023"], "build takes no job parameters"),
        (["run", "simulate", "--service-account", "not an email"], "--service-account"),
        (
            ["run", "embed", *EMB, "--stac", "gs://my-bucket/c.json", "--stac-api", API],
            "parameters stac and stac_api exclude each other",
        ),
        (["run", "embed", *EMB], "give one of the parameters stac, stac_api"),
        (["run", "embed", *EMB, "--year", "2022", "--stac-api", API], "year and period"),
        (
            ["run", "embed", *EMB, "--stac-api", "http://earth-search.aws.element84.com/v1"],
            "parameter 'stac_api': 'http://earth-search",
        ),
        (
            ["run", "build-training-data", "--years", "2023", "--out", "gs://my-bucket/t"],
            "give one of the parameters stac, stac_api, observations",
        ),
    ],
)
def test_errors_come_before_any_gcloud_call(argv, message, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cloud.subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(cloud.shutil, "which", lambda name: "/usr/bin/gcloud")
    assert cloud.run([*argv, *WHERE]) == 2
    assert message in capsys.readouterr().err
    assert calls == []


def test_bad_cloud_options_are_named():
    kw = dict(project="my-project", region="europe-west1", bucket="my-bucket", version="0.1.0")
    for name, value in [("project", "My Project"), ("region", "europe"), ("bucket", "b")]:
        with pytest.raises(cloud.CloudError, match=f"--{name} '{value}'"):
            cloud.gcloud_commands("build", "simulate", **{**kw, name: value})


def test_run_issues_the_commands_in_the_checkout(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cloud.shutil, "which", lambda name: "/usr/bin/gcloud")
    monkeypatch.setattr(cloud.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    assert cloud.run(["build", "simulate", *WHERE, "--image-version", "0.1.0"]) == 0
    expected = cloud.gcloud_commands(
        "build",
        "simulate",
        project="my-project",
        region="europe-west1",
        bucket="my-bucket",
        version="0.1.0",
    )
    assert [cmd for cmd, _ in calls] == expected
    assert all(kw == {"check": True, "cwd": cloud.REPO_ROOT} for _, kw in calls)
    assert capsys.readouterr().out.splitlines() == ["+ " + shlex.join(c) for c in expected]


def test_missing_gcloud_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(cloud.shutil, "which", lambda name: None)
    assert cloud.run(["build", "simulate", *WHERE]) == 2
    assert "gcloud not found" in capsys.readouterr().err


def test_registered_in_the_cli(capsys):
    assert cli.JOBS["cloud"][0] == "beam_jobs.cloud"
    assert cli.main(["cloud", "build", "simulate", *WHERE, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("gcloud builds submit ")


# ---------------------------------------------------------------------------------- entry points


def test_argparse_does_not_take_underscored_options_by_itself():
    """Why template_argv exists: `--num_samples` is not `--num-samples` to argparse."""
    args, rest = build_training_data.build_parser().parse_known_args(
        ["--stac", "c.json", "--out", "o", "--num_samples=8"]
    )
    assert args.num_samples is None and rest == ["--num_samples=8"]


def test_template_argv_restores_the_jobs_command_line():
    launcher = [
        "--out=gs://b/sim",
        "--size_km=0.64",
        "--cloud_cover=0.3",
        "--verbose=true",
        "--runner=DataflowRunner",
        "--sdk_container_image=img:1",
        "--temp_location=gs://b/temp",
        "--region=europe-west1",
    ]
    argv = cloud.template_argv(simulate.build_parser(), launcher)
    assert argv == [
        "--out=gs://b/sim",
        "--size-km=0.64",
        "--cloud-cover=0.3",
        "--verbose",
        "--runner=DataflowRunner",
        "--sdk_container_image=img:1",
        "--temp_location=gs://b/temp",
        "--region=europe-west1",
    ]
    args, beam_args = simulate.parse_args(argv)
    assert (args.size_km, args.cloud_cover, args.verbose, args.region) == (
        "0.64",
        0.3,
        True,
        "demo",
    )
    assert beam_args == launcher[4:]
    p = build_training_data.build_parser()
    assert cloud.template_argv(p, ["--overwrite=false", "--num_samples", "8"]) == [
        "--num-samples",
        "8",
    ]
    with pytest.raises(SystemExit, match="--overwrite takes true or false"):
        cloud.template_argv(p, ["--overwrite=maybe"])


def test_job_options_names_every_long_option():
    p = argparse.ArgumentParser()
    p.add_argument("--num-samples", type=int)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("positional")
    assert list(cloud.job_options(p)) == ["num_samples", "verbose"]


def test_simulate_sim_region_is_the_jobs_and_region_is_beams():
    args, beam = simulate.parse_args(
        ["--out", "x", "--sim-region", "demo", "--region", "europe-west1"]
    )
    assert (args.region, beam) == ("demo", ["--region", "europe-west1"])
    args, beam = simulate.parse_args(["--out", "x", "--region=demo"])  # Beam's, whatever it says
    assert (args.region, beam) == ("demo", ["--region=demo"])


def test_simulate_rejects_an_unknown_sim_region_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        simulate.parse_args(["--out", "x", "--sim-region", "nowhere"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--sim-region: invalid choice: 'nowhere' (choose from 'demo')" in err


def test_stac_api_parameters_pass_to_the_launch():
    params = {
        "stac_api": API,
        "collections": "sentinel-2-l2a,cop-dem-glo-30",
        "bbox": "4.3,50.8,4.5,50.9",
        "years": "2023",
        "out": "gs://my-bucket/t",
    }
    kw = dict(project="my-project", region="europe-west1", bucket="my-bucket", version="0.1.0")
    (cmd,) = cloud.gcloud_commands("run", "build_training_data", params=params, **kw)
    assert cmd[-1] == (
        f"^~^stac_api={API}~collections=sentinel-2-l2a,cop-dem-glo-30~bbox=4.3,50.8,4.5,50.9"
        f"~years=2023~out=gs://my-bucket/t~sdk_container_image={IMAGE}:0.1.0-build_training_data"
    )
