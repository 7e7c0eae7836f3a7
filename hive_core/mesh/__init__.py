"""The mesh: identities, channels (aiortc and in-memory), signaling and the DHT."""
