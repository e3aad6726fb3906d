"""Diffusion training and generation: the forward process, data, training loop, sampling, generation plan."""
