"""Flex-template entry point of `earthembed cluster`; parameters in metadata.json beside it."""

from beam_jobs import cloud, cluster

if __name__ == "__main__":
    cluster.run(cloud.template_argv(cluster.build_parser()))
