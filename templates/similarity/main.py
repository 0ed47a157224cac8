"""Flex-template entry point of `earthembed similarity`; parameters in metadata.json beside it."""

from beam_jobs import cloud, similarity

if __name__ == "__main__":
    similarity.run(cloud.template_argv(similarity.build_parser()))
