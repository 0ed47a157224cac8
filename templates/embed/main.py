"""Flex-template entry point of `earthembed embed`; parameters in metadata.json beside it."""

from beam_jobs import cloud, embed

if __name__ == "__main__":
    embed.run(cloud.template_argv(embed.build_parser()))
