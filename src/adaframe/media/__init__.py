"""Video decoding, the per-frame backbones, decoding in worker processes, synthetic videos."""
