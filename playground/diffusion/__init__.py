"""The diffusion family (seed sections 6, 7 and 10.1): noise schedules, DDPM/DDIM samplers (plus
diffusers' DPM-Solver++ and Euler), a class-conditional U-Net and DiT, and their training."""
