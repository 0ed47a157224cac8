"""Flex-template entry point of `earthembed quicklook`; parameters in metadata.json beside it."""

from beam_jobs import cloud, quicklook

if __name__ == "__main__":
    quicklook.run(cloud.template_argv(quicklook.build_parser()))
