"""Low floor: the noise schedule, the samplers that walk it, and per-sample random generators."""
