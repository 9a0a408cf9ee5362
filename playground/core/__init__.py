"""Ground floor shared by every family: settings, device policy, registry, seeding, images, validation."""
