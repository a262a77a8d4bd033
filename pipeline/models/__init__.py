"""The models a job loads: the latent prior (autoencoder + denoiser), the severity encoder, the safe model store and foreign pipeline folders."""
