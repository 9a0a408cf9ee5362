"""The autoencoder / VAE family (seed sections 2-3)."""
