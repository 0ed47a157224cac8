"""Flex-template entry point of `earthembed embed-points`; parameters in metadata.json beside it."""

from beam_jobs import cloud, embed_points

if __name__ == "__main__":
    embed_points.run(cloud.template_argv(embed_points.build_parser()))
