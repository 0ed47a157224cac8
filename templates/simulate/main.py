"""Flex-template entry point of `earthembed simulate`; parameters in metadata.json beside it."""

from beam_jobs import cloud, simulate

if __name__ == "__main__":
    simulate.run(cloud.template_argv(simulate.build_parser()))
