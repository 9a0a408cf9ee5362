"""Our own tiny Stable Diffusion (a latent diffusion model, Rombach et al. 2022, "LDM").

The lesson's three parts, each a real diffusers / transformers class so that the same
``StableDiffusionPipeline`` code runs our 64×64 model and the Hub's 512×512 ones:

- ``vocab``      the tokenizer: a word-level vocabulary of the scene grammar in CLIP's BPE format;
- ``components`` the autoencoder (image x ↔ latent z = E(x), LDM §3.1), the text encoder τ_θ(y)
                 (LDM §3.3), the cross-attention U-Net ε_θ(z_t, t, τ_θ(y)) and the noise schedule;
                 building, assembling, saving and loading the pipeline;
- ``train``      ``python -m playground train tiny_sd``: first the autoencoder, then the U-Net and the
                 text encoder jointly on LDM eq. 2 with caption dropout for classifier-free guidance
                 (Ho & Salimans 2022).
"""
