"""Flex-template entry point of `earthembed index`; parameters in metadata.json beside it."""

from beam_jobs import cloud, index

if __name__ == "__main__":
    index.run(cloud.template_argv(index.build_parser()))
