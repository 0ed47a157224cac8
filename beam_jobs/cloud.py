"""`earthembed cloud`: build and run this project's Dataflow flex templates with gcloud.

Runbook
-------
Once per project (docs/cloud.md): enable the APIs, create the Artifact Registry
repository `earthembed` and a bucket, grant the roles. Then, from the repository root::

    # the image (Cloud Build) and the spec gs://BUCKET/templates/simulate.json
    earthembed cloud build simulate --project P --region europe-west1 --bucket B
    # the image once and every template; the GPU image and the embed/embed_points templates
    earthembed cloud build all --project P --region europe-west1 --bucket B
    earthembed cloud build all --gpu --project P --region europe-west1 --bucket B

    # job parameters as trailing --key value (or --parameters key=value); every one is checked
    # against templates/JOB/metadata.json before gcloud is called
    earthembed cloud run build_training_data --project P --region europe-west1 --bucket B \\
        --stac gs://B/sim/catalog.json --years 2023 --num-samples 100000 --out gs://B/td/v1
    earthembed cloud run embed --gpu --project P --region europe-west1 --bucket B \\
        --stac gs://B/sim/catalog.json --bbox 4.3,50.8,4.5,50.9 --year 2023 --out gs://B/emb

`--dry-run` prints the gcloud commands instead of running them. Nothing here reads or prints
credentials: gcloud uses its own login, the service account is given by its email.

Images. templates/Dockerfile (templates/Dockerfile.gpu: CUDA JAX) builds
`REGION-docker.pkg.dev/PROJECT/earthembed/earthembed[-gpu]:VERSION`. In the same Cloud Build
(templates/cloudbuild.yaml) the image is tagged once per template as `...:VERSION-JOB`, a copy
whose only difference is FLEX_TEMPLATE_PYTHON_PY_FILE=templates/JOB/main.py: the launcher reads
its entry point from the image, and `flex-template build --image` cannot set it. A template's
image is both its launcher and, through the `sdk_container_image` parameter, its workers' SDK
container.

Parameters. A template parameter is the job's long option without dashes, `-` read as `_`
(`num_samples` for `--num-samples`); flags take `true` or `false`. The launcher passes them as
`--num_samples=8 --verbose=true`; `template_argv`, called by each templates/JOB/main.py, turns
that back into the job's own command line (`--num-samples=8 --verbose`), using the job's
`build_parser()`. Translating in one place keeps the jobs' parsers and `--help` free of a second
spelling, and Beam's own options (which use underscores themselves) pass through untouched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from beam_jobs.flags import GPU_MACHINE_TYPE, PARSERS, REPO_ROOT, TEMPLATE_JOBS
from beam_jobs.flags import cloud_parser as build_parser

REPOSITORY = "earthembed"  # the Artifact Registry repository
IMAGE_NAME = "earthembed"
JOBS = TEMPLATE_JOBS
GPU_JOBS = ("embed", "embed_points")  # the jobs that run the model
# Job options that are not template parameters, and why.
EXCLUDED_OPTIONS: dict[str, dict[str, str]] = {
    "simulate": {
        "sim_region": "its only value, demo, is the default",
    },
}
CLOUDBUILD_CONFIG = "templates/cloudbuild.yaml"
DOCKERFILE = "templates/Dockerfile"
DOCKERFILE_GPU = "templates/Dockerfile.gpu"
GPU_ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")

_PROJECT = re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]")
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_NETWORK = re.compile(r"[A-Za-z0-9:/._-]+")
_MACHINE_TYPE = re.compile(r"[a-z][a-z0-9]*-[a-z0-9-]+")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")
_JOB_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# gcloud list-flag delimiters, tried in order when a value holds a comma (`^~^a=1,2~b=3`).
_DELIMITERS = "~|#!"


class CloudError(ValueError):
    """A bad job, option or template parameter; the message names it."""


# ---------------------------------------------------------------------------------- names


def normalize_job(name: str) -> str:
    """'build-training-data' or 'build_training_data' -> 'build_training_data'."""
    job = name.replace("-", "_")
    if job not in JOBS:
        raise CloudError(f"unknown job {name!r}; one of {', '.join(JOBS)} (or all)")
    return job


def package_version() -> str:
    try:
        return importlib.metadata.version("earthembed")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def image_uri(
    *, project: str, region: str, version: str, gpu: bool = False, job: str | None = None
) -> str:
    """The Artifact Registry image; with `job`, that template's tag of it (`VERSION-JOB`)."""
    name = f"{IMAGE_NAME}-gpu" if gpu else IMAGE_NAME
    tag = f"{version}-{job}" if job else version
    return f"{region}-docker.pkg.dev/{project}/{REPOSITORY}/{name}:{tag}"


def template_gcs_path(bucket: str, job: str, *, gpu: bool = False) -> str:
    return f"gs://{bucket}/templates/{job}{'-gpu' if gpu else ''}.json"


def metadata_path(job: str) -> str:
    """Relative to the repository root, as gcloud is given it."""
    return f"templates/{job}/metadata.json"


def load_metadata(job: str, root: Path = REPO_ROOT) -> dict:
    path = root / metadata_path(job)
    if not path.is_file():
        raise CloudError(f"{path} not found: run `earthembed cloud` from a checkout (--source)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------- parameters


def parameter_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """['years=2023', 'bbox=4.3,50.8,4.5,50.9'] -> {'years': '2023', 'bbox': '4.3,...'}."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CloudError(f"--parameters takes key=value, got {pair!r}")
        _add_parameter(params, key, value)
    return params


def trailing_parameters(tokens: Sequence[str]) -> dict[str, str]:
    """['--num-samples', '8', '--verbose', '--out=gs://b/x'] -> {'num_samples': '8', ...}.

    A flag followed by another option (or nothing) reads as `true`.
    """
    params: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise CloudError(f"unexpected argument {token!r}; job parameters are --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        _add_parameter(params, key, value)
        i += 1
    return params


def _add_parameter(params: dict[str, str], key: str, value: str) -> None:
    name = key.replace("-", "_")
    if name in params:
        raise CloudError(f"parameter {name!r} given twice")
    params[name] = value


def validate_parameters(metadata: Mapping, params: Mapping[str, str]) -> dict[str, str]:
    """Check every parameter against the template's metadata; in the metadata's order.

    Raises:
        CloudError: an unknown parameter, a missing required one, or a value that does not
            match the parameter's regexes (naming the parameter and what was expected).
    """
    declared = {p["name"]: p for p in metadata["parameters"]}
    for name in params:
        if name not in declared:
            raise CloudError(
                f"unknown parameter {name!r} for template {metadata['name']!r}; known: "
                + ", ".join(declared)
            )
    for name, spec in declared.items():
        if name not in params:
            if not spec.get("isOptional", False):
                raise CloudError(f"parameter {name!r} is required ({spec['helpText']})")
            continue
        value = params[name]
        for pattern in spec.get("regexes", []):
            if re.fullmatch(pattern, value) is None:
                raise CloudError(
                    f"parameter {name!r}: {value!r} does not match {pattern} ({spec['helpText']})"
                )
    return {name: params[name] for name in declared if name in params}


def check_parameter_groups(job: str, params: Mapping[str, str]) -> None:
    """The job's mutually exclusive options as parameters: at most one of each group, and
    one where the job needs one (`stac`, `stac_api` or `observations`), checked before a
    launch that would fail only once the launcher parses them.

    Raises:
        CloudError: naming the parameters of the group.
    """
    parser = PARSERS[job.replace("_", "-")]()
    names = {id(a): n for n, a in job_options(parser).items()}
    for group in parser._mutually_exclusive_groups:  # argparse has no public accessor
        members = [names[id(a)] for a in group._group_actions if id(a) in names]
        given = [n for n in members if n in params and params[n].lower() not in FALSE]
        if len(given) > 1:
            raise CloudError(f"parameters {' and '.join(given)} exclude each other")
        if group.required and not given:
            raise CloudError(f"give one of the parameters {', '.join(members)}")


def gcloud_parameters(params: Mapping[str, str]) -> str:
    """`k=v,k=v` for gcloud's --parameters; `^~^k=v~k=v` when a value holds a comma."""
    items = [f"{k}={v}" for k, v in params.items()]
    if not any("," in v for v in params.values()):
        return ",".join(items)
    for delim in _DELIMITERS:
        if not any(delim in item for item in items):
            return f"^{delim}^" + delim.join(items)
    raise CloudError(f"no gcloud delimiter ({_DELIMITERS}) is free in the parameter values")


# ---------------------------------------------------------------------------------- commands


def build_commands(
    jobs: Sequence[str],
    *,
    project: str,
    region: str,
    bucket: str,
    version: str,
    gpu: bool = False,
    skip_image: bool = False,
) -> list[list[str]]:
    """Cloud Build of the image (and its per-template tags), then one template spec per job."""
    commands = []
    if not skip_image:
        image = image_uri(project=project, region=region, version=version, gpu=gpu)
        dockerfile = DOCKERFILE_GPU if gpu else DOCKERFILE
        # fmt: off
        commands.append([
            "gcloud", "builds", "submit",
            "--project", project,
            "--region", region,
            "--config", CLOUDBUILD_CONFIG,
            "--substitutions", f"_IMAGE={image},_DOCKERFILE={dockerfile}",
            ".",
        ])
        # fmt: on
    for job in jobs:
        image = image_uri(project=project, region=region, version=version, gpu=gpu, job=job)
        # fmt: off
        commands.append([
            "gcloud", "dataflow", "flex-template", "build",
            template_gcs_path(bucket, job, gpu=gpu),
            "--project", project,
            "--image", image,
            "--sdk-language", "PYTHON",
            "--metadata-file", metadata_path(job),
        ])
        # fmt: on
    return commands


def run_command(
    job: str,
    params: Mapping[str, str],
    *,
    project: str,
    region: str,
    bucket: str,
    version: str,
    job_name: str,
    gpu: bool = False,
    service_account: str | None = None,
    network: str | None = None,
    subnetwork: str | None = None,
    max_workers: int | None = None,
    machine_type: str | None = None,
) -> list[str]:
    """`gcloud dataflow flex-template run` for already validated parameters."""
    image = image_uri(project=project, region=region, version=version, gpu=gpu, job=job)
    # fmt: off
    cmd = [
        "gcloud", "dataflow", "flex-template", "run", job_name,
        "--project", project,
        "--template-file-gcs-location", template_gcs_path(bucket, job, gpu=gpu),
        "--region", region,
        "--staging-location", f"gs://{bucket}/staging",
        "--temp-location", f"gs://{bucket}/temp",
    ]
    # fmt: on
    if service_account:
        cmd += ["--service-account-email", service_account]
    if network:
        cmd += ["--network", network]
    if subnetwork:
        cmd += ["--subnetwork", subnetwork]
    if max_workers:
        cmd += ["--max-workers", str(max_workers)]
    if gpu:
        machine_type = machine_type or GPU_MACHINE_TYPE
        cmd += ["--additional-experiments", GPU_ACCELERATOR]
    if machine_type:
        cmd += ["--worker-machine-type", machine_type]
    cmd += ["--parameters", gcloud_parameters({**params, "sdk_container_image": image})]
    return cmd


def default_job_name(job: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"earthembed-{job.replace('_', '-')}-{now:%Y%m%d-%H%M%S}"


def gcloud_commands(
    action: str,
    job: str,
    *,
    project: str,
    region: str,
    bucket: str,
    version: str,
    params: Mapping[str, str] | None = None,
    gpu: bool = False,
    skip_image: bool = False,
    job_name: str | None = None,
    service_account: str | None = None,
    network: str | None = None,
    subnetwork: str | None = None,
    max_workers: int | None = None,
    machine_type: str | None = None,
    root: Path = REPO_ROOT,
) -> list[list[str]]:
    """Every gcloud command of `earthembed cloud build|run JOB`, checked before any is issued.

    Args:
        action: 'build' (image + template specs) or 'run' (launch one template).
        job: a template (one of JOBS: 'simulate', 'build_training_data', 'embed',
            'embed_points' and the analysis jobs 'sample', 'similarity', 'index', 'change',
            'cluster', 'classify', 'quicklook'), or 'all' with 'build'.
        project, region, bucket, version: where the image and specs live; `version` tags the
            image.
        params: the job's template parameters (run), checked against its metadata.json.
        gpu: GPU image and template; with run, an L4 GPU per G2 worker.
        skip_image: build only the template specs, reusing the pushed image.
        job_name: the Dataflow job name (run); a timestamped one when omitted.
        service_account, network, subnetwork, max_workers, machine_type: Dataflow worker
            settings (run).
        root: the checkout holding templates/.

    Returns:
        The commands, each a list of arguments.

    Raises:
        CloudError: naming the option or parameter at fault.
    """
    _check("--project", project, _PROJECT)
    _check("--region", region, _REGION)
    _check("--bucket", bucket, _BUCKET)
    _check("--image-version", version, _IMAGE_TAG)
    if action == "build":
        jobs = list(GPU_JOBS if gpu else JOBS) if job == "all" else [normalize_job(job)]
        if gpu:
            _check_gpu_jobs(jobs)
        for name in jobs:
            load_metadata(name, root)  # gcloud would only fail after the image build
        return build_commands(
            jobs,
            project=project,
            region=region,
            bucket=bucket,
            version=version,
            gpu=gpu,
            skip_image=skip_image,
        )
    if action != "run":
        raise CloudError(f"unknown action {action!r}; build or run")
    job = normalize_job(job)
    if gpu:
        _check_gpu_jobs([job])
        if machine_type and not machine_type.startswith("g2-"):
            raise CloudError(f"--machine-type {machine_type}: the L4 GPU needs a G2 machine type")
    for option, value, pattern in (
        ("--service-account", service_account, _EMAIL),
        ("--network", network, _NETWORK),
        ("--subnetwork", subnetwork, _NETWORK),
        ("--machine-type", machine_type, _MACHINE_TYPE),
        ("--job-name", job_name, _JOB_NAME),
    ):
        if value is not None:
            _check(option, value, pattern)
    if max_workers is not None and max_workers < 1:
        raise CloudError(f"--max-workers must be >= 1, got {max_workers}")
    checked = validate_parameters(load_metadata(job, root), params or {})
    check_parameter_groups(job, checked)
    return [
        run_command(
            job,
            checked,
            project=project,
            region=region,
            bucket=bucket,
            version=version,
            job_name=job_name or default_job_name(job),
            gpu=gpu,
            service_account=service_account,
            network=network,
            subnetwork=subnetwork,
            max_workers=max_workers,
            machine_type=machine_type,
        )
    ]


def _check(option: str, value: str, pattern: re.Pattern) -> None:
    if pattern.fullmatch(value) is None:
        raise CloudError(f"{option} {value!r} is not valid (expected {pattern.pattern})")


def _check_gpu_jobs(jobs: Sequence[str]) -> None:
    for job in jobs:
        if job not in GPU_JOBS:
            raise CloudError(f"--gpu applies to {' and '.join(GPU_JOBS)} only, not {job}")


# ---------------------------------------------------------------------------------- entry points


def job_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Template parameter name -> the parser's action, for every long option but --help."""
    options = {}
    for action in parser._actions:  # argparse has no public accessor for its actions
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest == "help":
            continue
        options[longs[0][2:].replace("-", "_")] = action
    return options


def template_argv(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> list[str]:
    """What the flex-template launcher passes (`--num_samples=8 --verbose=true`) as the job's
    command line (`--num-samples=8 --verbose`).

    Job options get their own spelling; flags given `=true` are set and `=false` dropped (a
    flag that is on by default, `--retry-failed`, becomes `--no-retry-failed`); everything else (Beam's options) passes unchanged.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    by_string = {s: a for a in job_options(parser).values() for s in a.option_strings}
    out: list[str] = []
    for arg in argv:
        if not arg.startswith("--"):
            out.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        spelling = next(
            (s for s in (f"--{name}", f"--{name.replace('_', '-')}") if s in by_string), None
        )
        if spelling is None:
            out.append(arg)
            continue
        action = by_string[spelling]
        if action.nargs == 0:  # a flag
            if not eq or value.lower() in TRUE:
                out.append(spelling)
            elif value.lower() not in FALSE:
                raise SystemExit(f"{spelling} takes true or false, got {value!r}")
            elif isinstance(action, argparse.BooleanOptionalAction):  # on by default
                out.append(action.option_strings[1])  # --no-...
            continue
        out.append(f"{spelling}={value}" if eq else spelling)
    return out


# ---------------------------------------------------------------------------------- CLI


def run(argv: list[str] | None = None) -> int:
    """Entry point of `earthembed cloud`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, trailing = parser.parse_known_args(argv)
    try:
        _check_no_repeated_options(parser, argv)
        params = parameter_pairs(args.parameters)
        for name, value in trailing_parameters(trailing).items():
            if name in params:
                raise CloudError(f"parameter {name!r} given twice")
            params[name] = value
        if args.action == "build" and params:
            raise CloudError("build takes no job parameters: " + ", ".join(params))
        commands = gcloud_commands(
            args.action,
            args.job,
            project=args.project,
            region=args.region,
            bucket=args.bucket.removeprefix("gs://").rstrip("/"),
            version=args.image_version or package_version(),
            params=params,
            gpu=args.gpu,
            skip_image=args.skip_image,
            job_name=args.job_name,
            service_account=args.service_account,
            network=args.network,
            subnetwork=args.subnetwork,
            max_workers=args.max_workers,
            machine_type=args.machine_type,
            root=args.source,
        )
    except CloudError as e:
        print(f"earthembed cloud: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for cmd in commands:
            print(shlex.join(cmd))
        return 0
    if shutil.which("gcloud") is None:
        print("earthembed cloud: gcloud not found; install the Google Cloud CLI", file=sys.stderr)
        return 2
    for cmd in commands:
        print("+ " + shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=args.source)
    return 0


def _check_no_repeated_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """`--region` twice would silently keep the last; a job's `region` goes in --parameters."""
    seen: set[str] = set()
    own = {s for a in parser._actions for s in a.option_strings if s != "--parameters"}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in own:
            if flag in seen:
                raise CloudError(
                    f"{flag} given twice; a job parameter named like an option of "
                    f"`earthembed cloud` goes in --parameters {flag[2:].replace('-', '_')}=VALUE"
                )
            seen.add(flag)


if __name__ == "__main__":
    sys.exit(run())
