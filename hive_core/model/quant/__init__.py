"""Our own GGUF quantisers (ggml's reference algorithms, vectorised over blocks), llama.cpp's
per-tensor type choice, and writers of requantised and random-weight GGUF files."""
