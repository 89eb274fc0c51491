"""The data pipeline: sources -> tokenizer -> token shards -> packed batches (each arrow a file on disk)."""
