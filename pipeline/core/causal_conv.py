"""The policy's dilated causal convolution stack (kernel 2, ELU) as shifted matrix products
on a flat, channels-last layout, in blocks of products, with a hand-written backward:
docs/policy.md, The demand encoder's arithmetic.

A block of b products x N positions is one [b N, C] matrix, row = product x N + position.
A layer with dilation d and ``Conv1d`` weight W [C, C_in, 2] computes, for every row k >= d,
``z[k] = h[k] @ W[:, :, 1].T + h[k - d] @ W[:, :, 0].T + bias``: two matrix products on
row-shifted views, with no padding and no copy. Where the position of k in its product is
below the layers' dilations so far, the row mixes in the previous product's tail: those
rows are filler, never read by a valid output (one whose whole receptive field lies in its
own product), and the backward gives them zero gradient, so they add nothing to any
gradient. The forward keeps every layer's output (the ELU's backward needs only that);
the backward works block by block while a block's rows are in cache. Same arithmetic as
``torch.nn.Conv1d`` on the valid positions (tests/test_policy.py compares outputs and
gradients).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

BLOCK_ROWS = 32768  # rows (products x positions) per block; a block's layers stay in cache


def blocks(size: int, rows_per_product: int) -> list[slice]:
    step = max(1, BLOCK_ROWS // max(rows_per_product, 1))
    return [slice(i, min(i + step, size)) for i in range(0, size, step)]


class CausalConvStack(torch.autograd.Function):
    """``apply(x [B, N, C_in], dilations, *weights, *biases)`` -> [B, N, C], valid from
    position ``sum(dilations)`` on (filler before it); ``weights``: the layers' ``Conv1d``
    weights [C, C_in, 2]. Once differentiable: a penalty on the policy's Jacobian in the
    state never differentiates the encoder twice."""

    @staticmethod
    def forward(ctx, x: Tensor, dilations: tuple[int, ...], *params: Tensor) -> Tensor:
        n = len(dilations)
        weights, biases = params[:n], params[n:]
        B, N = x.shape[:2]
        outputs = [x.new_empty(B, N, w.shape[0]) for w in weights]  # kept for the backward
        for rows in blocks(B, N):
            h = x[rows].reshape(-1, x.shape[2])
            for w, b, d, out in zip(weights, biases, dilations, outputs):
                z = out[rows].view(-1, w.shape[0])  # a block of a contiguous [B, N, C]: contiguous
                torch.addmm(b, h[d:], w[:, :, 1].t(), out=z[d:])
                z[d:].addmm_(h[:-d], w[:, :, 0].t())
                z[:d].zero_()  # filler
                h = torch.nn.functional.elu_(z)
        ctx.dilations = dilations
        ctx.save_for_backward(x, *weights, *outputs)
        return outputs[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        dilations = ctx.dilations
        n = len(dilations)
        x, *rest = ctx.saved_tensors
        weights, outputs = rest[:n], rest[n:]
        grad_w = [torch.zeros_like(w) for w in weights]
        grad_b = [w.new_zeros(w.shape[0]) for w in weights]
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_out = grad_out.contiguous()
        B, N = x.shape[:2]
        for rows in blocks(B, N):
            g = grad_out[rows].view(-1, grad_out.shape[2])
            for i in reversed(range(n)):
                d, w = dilations[i], weights[i]
                h = (outputs[i - 1] if i else x)[rows].reshape(-1, w.shape[1])
                y = outputs[i][rows].view(-1, w.shape[0])
                gz = torch.ops.aten.elu_backward(g, 1.0, 1, 1.0, True, y)  # from the ELU's output
                grad_w[i][:, :, 1].add_(gz[d:].t() @ h[d:])
                grad_w[i][:, :, 0].add_(gz[d:].t() @ h[:-d])
                grad_b[i].add_(gz[d:].sum(dim=0))
                if i == 0 and grad_x is None:
                    break
                g = gz @ w[:, :, 1]
                g[:-d].addmm_(gz[d:], w[:, :, 0])
            if grad_x is not None:
                grad_x[rows] = g.view(-1, N, x.shape[2])
        return (grad_x, None, *grad_w, *grad_b)
