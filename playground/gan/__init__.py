"""The GAN family (seed sections 4-5): five digit GANs and a live 2-D GAN trainer."""
