"""What the PyTorch references share: random weights that make a wrong conversion show in the logits."""

import torch
from torch import nn


def randomize(model, seed=0):
    """Random weights, BN affine parameters and BN running statistics (so a wrong mapping shows in the logits)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + 0.5 * torch.rand(c, generator=gen))
                module.bias.copy_(0.2 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / module.in_features ** 0.5)
                module.bias.copy_(0.1 * torch.randn(module.out_features, generator=gen))
    return model.eval()


def randomize_calibrated(model, seed=0, size=32):
    """Random weights and BN affine parameters, BN running statistics near those of random images.

    The statistics are measured on a random batch (so activations stay of order
    one through every layer, and a wrong mapping shows in the logits) and then
    perturbed (so a swapped mean / variance shows too). Returns the model in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.num_features, generator=gen))
                module.momentum = 1.0  # the running statistics become the next batch's
        model.train()
        model(torch.randn(8, 3, size, size, generator=gen))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.momentum = 0.1
                module.running_mean.add_(0.2 * module.running_var.sqrt() * torch.randn(c, generator=gen))
                module.running_var.mul_(0.7 + 0.6 * torch.rand(c, generator=gen))
    return model.eval()
