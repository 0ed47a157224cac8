"""Flex-template entry point of `earthembed change`; parameters in metadata.json beside it."""

from beam_jobs import change, cloud

if __name__ == "__main__":
    change.run(cloud.template_argv(change.build_parser()))
