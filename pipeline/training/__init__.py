"""Training the models: typed training configs, data, tasks (what each model learns), the resumable loop and its checkpoints."""
