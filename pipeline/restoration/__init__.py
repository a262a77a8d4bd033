"""The method: the Restorer, Flash's adaptive start around any solver, noise schedules and samplers, per-sample seeding and tuned solver settings."""
