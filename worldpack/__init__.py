"""WorldPack (Oshima et al.): a CDiT video world model with temporal RoPE, pose-based memory retrieval and trajectory
packing, plus the autoencoder, EDM diffusion and training loop it shares with the NWM and DIAMOND baselines.
See model.py for the assembled model and world_model.py for the `worldpack` entry of the model registry."""
