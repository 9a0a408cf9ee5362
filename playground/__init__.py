"""Generative Playground: point-and-click lessons on generative models (VAE, GAN, diffusion, SD)."""

__version__ = "0.1.0"
