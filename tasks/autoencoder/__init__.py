"""The autoencoder of latent diffusion: its training and its reconstruction fidelity."""
