"""One restore job's plan and run: typed config, records, read-time validation, stages, the backend-neutral scheduler and its buckets, cost model, stats, reprocessing."""
