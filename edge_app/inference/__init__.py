"""TFLite models: interpreter, graph reader/writer, partitioner, shards, builder and zoo."""
