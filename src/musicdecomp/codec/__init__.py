"""Neural audio codec (EnCodec 24 kHz): weights, codes and latents."""
