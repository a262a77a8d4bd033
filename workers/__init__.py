"""Ray actors and stages that wrap pipeline/: shard reading, severity, bucketing, solving, writing."""
