"""Flex-template entry point of `earthembed classify`; parameters in metadata.json beside it."""

from beam_jobs import classify, cloud

if __name__ == "__main__":
    classify.run(cloud.template_argv(classify.build_parser()))
