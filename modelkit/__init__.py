"""The world-model kit: what every trained model here shares, and nothing model-specific.

Inference: checkpoint I/O (`checkpoint`), EDM diffusion (`diffusion`), CDiT blocks (`cdit`) with temporal RoPE
(`rope`), the autoencoder with its presets and loader (`autoencoder`), the checkpoint-loading WorldModel adapter and
lockstep rollout (`adapter`), and the `Preset` type (`presets`).
Training (modules named `train*`, never imported at inference): the loop `fit` with EMA, seeding and resume
(`train`), training data and batches (`train_data`), and the latent stage: the autoencoder trainer and the train split
encoded into latents (`train_autoencoder`).

WorldPack (`worldpack/`) and the NWM and DIAMOND baselines (`baselines/`) are built from these pieces; they import the
kit, never each other.
"""
