"""Flex-template entry point of `earthembed sample`; parameters in metadata.json beside it."""

from beam_jobs import cloud, sample

if __name__ == "__main__":
    sample.run(cloud.template_argv(sample.build_parser()))
