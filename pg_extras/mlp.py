"""A multilayer perceptron linearised at its current parameters: Jacobian-vector products without autograd.

For ``h_0 = x`` and ``h_i = act_i(h_{i-1} W_i^T + b_i)`` (``i = 1 .. L``; ``act`` in ``tanh``, ``relu`` or none) the
forward pass is run once, its activations and activation derivatives kept, and then

* :meth:`MlpLinearization.jvp`: ``J t`` (forward-mode tangent of the output for parameter tangents ``t``),
* :meth:`MlpLinearization.vjp`: ``J^T u`` (backpropagation of an output cotangent ``u``)

cost a handful of matrix products each, with none of the autograd graph / engine overhead that dominates small
networks on a CPU. TRPO uses it for the Gauss-Newton Fisher-vector products ``J^T M J v`` of its conjugate gradient
(docs/maths.md §4; :func:`pg_extras.trust_region.gauss_newton_fvp_fn` is the autograd version) and for its critic's
regression steps. The products equal autograd's up to float rounding. :func:`mlp_layers` reads the layers of a torch
``nn.Sequential`` MLP (public module traversal), for :func:`pg_extras.mlp_fvp_fn` (docs/maths.md#fisher-vector-products).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP_ACTIVATIONS", "MlpLinearization", "mlp_forward", "mlp_layers"]

#: Activations :class:`MlpLinearization` supports (``None``: identity).
MLP_ACTIVATIONS = ("tanh", "relu", None)

_ACTIVATION_MODULES: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def mlp_layers(
    mlp: nn.Module | Sequence[nn.Module],
) -> list[tuple[torch.Tensor, torch.Tensor | None, str | None]] | None:
    """The ``(weight, bias, activation)`` layers of a chain of modules, for :class:`MlpLinearization`; ``None`` if not an MLP.

    ``mlp`` is a module or a list of modules applied one after the other; ``nn.Sequential`` containers (and subclasses
    such as TorchRL's ``MLP``) are flattened by the public ``children()`` traversal. Accepted: ``nn.Linear``, each
    optionally followed by one ``nn.Tanh`` / ``nn.ReLU``, and ``nn.Identity`` anywhere; these types must match exactly
    (a subclass may compute something else). Anything else (another activation, dropout, normalisation, a custom
    module) gives ``None``. Neither hooks nor a container's own ``forward`` are inspected: callers compare
    :attr:`MlpLinearization.output` with the network's real output (as :func:`pg_extras.mlp_fvp_fn` does).

    Example::

        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Sequential(nn.Linear(4, 2)))
        >>> [(tuple(w.shape), act) for w, _, act in mlp_layers(net)]
        [((4, 3), 'tanh'), ((2, 4), None)]
        >>> mlp_layers(nn.Sequential(nn.Linear(3, 4), nn.GELU())) is None
        True
    """
    pending = [mlp] if isinstance(mlp, nn.Module) else list(mlp)[::-1]  # a stack: the next module last
    layers: list[list] = []
    while pending:
        module = pending.pop()
        if isinstance(module, nn.Sequential):
            pending.extend(list(module.children())[::-1])
        elif type(module) is nn.Linear:
            layers.append([module.weight, module.bias, None])
        elif type(module) in _ACTIVATION_MODULES and layers and layers[-1][2] is None:
            layers[-1][2] = _ACTIVATION_MODULES[type(module)]
        elif type(module) is not nn.Identity:
            return None
    return [(w, b, act) for w, b, act in layers] or None


def mlp_forward(layers: Sequence[tuple[torch.Tensor, torch.Tensor | None, str | None]], x: torch.Tensor) -> torch.Tensor:
    """The output of the MLP ``layers`` (from :func:`mlp_layers`) at ``x``: the modules' own operations (``addmm`` /
    ``mm``, ``tanh``, ``relu``), without ``nn.Module`` calls; for a rollout step of a small policy, where the module
    calls cost as much as the arithmetic. Equal to the modules' output.

    Example::

        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> x = torch.randn(5, 3)
        >>> torch.equal(mlp_forward(mlp_layers(net), x), net(x))
        True
    """
    for weight, bias, activation in layers:
        x = torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
        if activation == "tanh":
            x = torch.tanh(x)
        elif activation == "relu":
            x = torch.relu(x)
    return x


class MlpLinearization:
    """An MLP's forward pass at fixed parameters, kept for repeated ``J t`` / ``J^T u`` products.

    :param layers: ``(weight [out, in], bias [out] or None, activation)`` per layer, ``activation`` in
        :data:`MLP_ACTIVATIONS`; the tensors are read, never modified (gradients are returned, not accumulated).
    :param x: ``[B, in]`` input (treated as a constant).

    Attributes: ``output`` (``[B, out]``, no graph).

    Example::

        >>> lin1, lin2 = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
        >>> x = torch.randn(5, 3)
        >>> mlp = MlpLinearization([(lin1.weight, lin1.bias, "tanh"), (lin2.weight, lin2.bias, None)], x)
        >>> torch.allclose(mlp.output, lin2(torch.tanh(lin1(x))))
        True
        >>> [tuple(g.shape) for pair in mlp.vjp(torch.ones(5, 2)) for g in pair]
        [(4, 3), (4,), (2, 4), (2,)]
    """

    def __init__(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor | None, str | None]], x: torch.Tensor) -> None:
        if not layers:
            raise ValueError("layers is empty: pass at least one (weight, bias, activation).")
        if x.dim() != 2:
            raise ValueError(f"x must be [B, in], got shape {tuple(x.shape)}: flatten the batch / features first.")
        self.layers = [(w, b, act) for w, b, act in layers]
        self.inputs: list[torch.Tensor] = []  # h_{i-1}
        self.derivatives: list[torch.Tensor | None] = []  # act_i'(z_i), None for the identity
        h = x.detach()
        with torch.no_grad():
            for i, (weight, bias, act) in enumerate(self.layers):
                if act not in MLP_ACTIVATIONS:
                    raise ValueError(f"layer {i} has activation {act!r}: use one of {MLP_ACTIVATIONS}.")
                if weight.dim() != 2 or weight.shape[1] != h.shape[1]:
                    raise ValueError(
                        f"layer {i}: weight has shape {tuple(weight.shape)} but its input has {h.shape[1]} features."
                    )
                self.inputs.append(h)
                z = torch.nn.functional.linear(h, weight, bias)
                if act == "tanh":
                    h = torch.tanh(z)
                    self.derivatives.append(1.0 - h * h)
                elif act == "relu":
                    h = torch.relu(z)
                    self.derivatives.append((h > 0).to(h.dtype))
                else:
                    h = z
                    self.derivatives.append(None)
        self.output = h

    def jvp(self, tangents: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        """``J t``: the output's tangent ``[B, out]`` for parameter tangents ``(dW_i, db_i)`` (``db_i`` None: no bias)."""
        if len(tangents) != len(self.layers):
            raise ValueError(f"tangents has {len(tangents)} layers but the MLP has {len(self.layers)}.")
        with torch.no_grad():
            dh: torch.Tensor | None = None
            for (weight, _, _), h, deriv, (dw, db) in zip(self.layers, self.inputs, self.derivatives, tangents, strict=True):
                dz = torch.nn.functional.linear(h, dw, db)  # h dW^T + db
                if dh is not None:
                    dz = dz.addmm_(dh, weight.t())  # + dh_{i-1} W^T
                dh = dz if deriv is None else dz.mul_(deriv)
        assert dh is not None
        return dh

    def vjp(self, cotangent: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``J^T u``: ``(dW_i, db_i)`` per layer for an output cotangent ``u`` ``[B, out]`` (``db_i`` None: no bias)."""
        grads: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        with torch.no_grad():
            g = cotangent
            for i in range(len(self.layers) - 1, -1, -1):
                weight, bias, _ = self.layers[i]
                deriv = self.derivatives[i]
                if deriv is not None:
                    g = g * deriv
                grads.append((g.t().mm(self.inputs[i]), None if bias is None else g.sum(0)))
                if i > 0:
                    g = g.mm(weight)
        return grads[::-1]
