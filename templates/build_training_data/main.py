"""Flex-template entry point of `earthembed build-training-data`; parameters in metadata.json beside it."""

from beam_jobs import build_training_data, cloud

if __name__ == "__main__":
    build_training_data.run(cloud.template_argv(build_training_data.build_parser()))
