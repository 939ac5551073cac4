"""Test-wide settings: one thread (DESIGN §7: on a shared 2-core box two threads run slower than one)."""

import torch

torch.set_num_threads(1)
