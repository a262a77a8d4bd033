"""Entry points a user or a cluster runs: config, CLI and orchestration."""
