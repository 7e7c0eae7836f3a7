"""The hive: a peer of a P2P inference mesh that shards a real llama-architecture model."""
