"""Archives in, results out: WebDataset shards and samples, the output store and its part writer."""
