"""Imported only by the live trainer's fork server (``live_process``): one training step and one
picture, so that torch's lazy initialisation (about 1.4 s measured on the first step of a fresh
process) happens once there and every forked worker starts training at once."""
import torch

from .live import RECOMMENDED, LiveConfig, LiveGAN

torch.set_num_threads(1)            # before any op: no OpenMP pool exists to be broken by fork()
for _loss in RECOMMENDED:
    _gan = LiveGAN(LiveConfig(loss=_loss, **RECOMMENDED[_loss]).validate())
    _gan.step(2)
    _gan.render(64, "motion")
del _gan, _loss
