"""The Accordion World: the city (a CRDT doc), its map (MDS of latencies) and its 3D view."""
