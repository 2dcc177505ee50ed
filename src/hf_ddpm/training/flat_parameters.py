# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The UNet's parameters as views of one flat buffer, and their gradients as views of another.

AdamW, gradient clipping and the EMA then each run once over one tensor instead of once per parameter tensor (the
digits UNet has 114): on one CPU thread that takes the time of a training step spent outside the UNet's forward and
backward from ~6% to ~3% (benchmarks/train_throughput.py, row "ours + --no-flat_parameters"). Megatron-LM and
DeepSpeed keep flat buffers for the same reason; PyTorch's own (FSDP's FlatParameter) comes with sharding, so it is
done here, in the few lines below.

The model itself does not change: every parameter keeps its name, shape and memory layout, autograd accumulates
into the gradient views in place (they are never set to None: `optimizer.zero_grad(set_to_none=False)`), and
`state_dict()` returns independent tensors (safetensors and Accelerate drop all but one of a group of tensors that
share memory).
"""

import torch


def can_flatten(parameters: list[torch.nn.Parameter]) -> bool:
    """One dtype and device, every tensor dense (contiguous or channels-last) and trained."""
    first = parameters[0]
    return all(
        p.dtype == first.dtype
        and p.device == first.device
        and p.requires_grad
        and (p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last))
        for p in parameters
    )


class FlatParameters:
    """
    Make the parameters of `module` views of `self.parameter`, one flat `nn.Parameter` whose `.grad` holds their
    gradients: optimize, clip and average `[flat.parameter]` instead of `module.parameters()`.

    Args:
        module (`torch.nn.Module`): the model, already on its device and in its memory format (`.to()` afterwards
            would copy the parameters out of the buffer).
    """

    def __init__(self, module: torch.nn.Module):
        parameters = list(module.parameters())
        if not can_flatten(parameters):
            raise ValueError("FlatParameters needs dense parameters of one dtype and device.")
        self.offsets = [0]
        for p in parameters:
            self.offsets.append(self.offsets[-1] + p.numel())
        self.layouts = [(p.shape, p.stride()) for p in parameters]
        with torch.no_grad():
            self.parameter = torch.nn.Parameter(parameters[0].new_empty(self.offsets[-1]))
            self.parameter.grad = torch.zeros_like(self.parameter)
            views, self._gradient_views = self.views(self.parameter), self.views(self.parameter.grad)
            for p, view, grad in zip(parameters, views, self._gradient_views, strict=True):
                view.copy_(p)
                p.data, p.grad = view, grad
        self._module_parameters = parameters
        module.register_state_dict_post_hook(self._copy_views_hook())

    def collect_gradients(self) -> None:
        """
        Bring back into the buffer the gradients autograd wrote elsewhere: after `module.zero_grad()` (which sets
        them to None, its default) the next backward allocates new ones, which the optimizer would never see. Call it
        after the backward: one identity check per parameter, a copy only for those that strayed.
        """
        with torch.no_grad():
            for p, view in zip(self._module_parameters, self._gradient_views, strict=True):
                if p.grad is view:
                    continue
                if p.grad is None:
                    view.zero_()
                else:
                    view.copy_(p.grad)
                p.grad = view

    def check_views(self) -> None:
        """Raise if a parameter or its gradient is no longer a view of the buffers (e.g. `.to()` copied it out)."""
        weights, gradients = self.parameter.untyped_storage(), self.parameter.grad.untyped_storage()
        for p in self._module_parameters:
            if (
                p.untyped_storage().data_ptr() != weights.data_ptr()
                or p.grad is None
                or p.grad.untyped_storage().data_ptr() != gradients.data_ptr()
            ):
                raise RuntimeError("A parameter was copied out of the flat buffer: the optimizer would not train it.")

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat tensor laid out as `self.parameter` (the weights, their gradients, an EMA of them)."""
        return [
            flat[start:].as_strided(shape, stride)
            for start, (shape, stride) in zip(self.offsets[:-1], self.layouts, strict=True)
        ]

    def copy_to(self, flat: torch.Tensor, parameters) -> None:
        """Copy a flat tensor laid out as `self.parameter` into the parameters of another copy of the module."""
        with torch.no_grad():
            for target, view in zip(parameters, self.views(flat), strict=True):
                target.copy_(view)

    def _copy_views_hook(self):
        buffer = self.parameter.untyped_storage().data_ptr()

        def copy_views(module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
            # views of one buffer share memory: safetensors refuses to save them and Accelerate's safetensors path
            # keeps one of each group of tensors sharing memory, so the state dict gets copies (a save: cheap)
            for name, tensor in state_dict.items():
                if name.startswith(prefix) and isinstance(tensor, torch.Tensor):
                    if tensor.untyped_storage().data_ptr() == buffer:
                        state_dict[name] = tensor.clone()

        return copy_views
