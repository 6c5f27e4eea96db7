"""gpu_device_check.py's torch side: our CUDA entry points over torch tensors, weights and
gradients converted between PyTorch's layout and Keras's, and the float64 autograd oracle."""

from __future__ import annotations


class Ours:
    """The module's CUDA entry points over torch tensors, outputs allocated here."""

    def __init__(self, kernels, torch):
        self.k, self.torch = kernels, torch

    def stream(self) -> int:
        return self.torch.cuda.current_stream().cuda_stream

    def _view(self, t):
        """bfloat16 tensors go as int16 views (__cuda_array_interface__ has no bfloat16)."""
        if t is not None and t.dtype == self.torch.bfloat16:
            return t.view(self.torch.int16)
        return t

    def _dtype(self, t):
        return "bfloat16" if t.dtype == self.torch.bfloat16 else None

    def forward(
        self, xw, h0, u, b, mask=None, reset_after=True, gates=True, path="auto", poison=False,
        kernel=None, input_bias=None,
    ):
        """xw: the projections, or the inputs x when `kernel` is given."""
        torch = self.torch
        bsz, t, _ = xw.shape
        h = u.shape[0]
        new = (
            (lambda *s: torch.full(s, float("nan"), dtype=xw.dtype, device=xw.device))
            if poison
            else (lambda *s: torch.empty(s, dtype=xw.dtype, device=xw.device))
        )
        out = {"h_seq": new(bsz, t, h), "h_last": new(bsz, h)}
        if gates:
            for name in ("update", "reset", "candidate") + (
                ("hu_candidate",) if reset_after else ()
            ):
                out[name] = new(bsz, t, h)
        v = self._view
        self.k.forward_cuda(
            v(xw),
            v(h0),
            v(u),
            v(b),
            v(out["h_seq"]),
            v(out["h_last"]),
            mask=mask,
            update=v(out.get("update")),
            reset=v(out.get("reset")),
            candidate=v(out.get("candidate")),
            hu_candidate=v(out.get("hu_candidate")),
            reset_after=reset_after,
            stream=self.stream(),
            path=path,
            kernel=v(kernel),
            input_bias=v(input_bias),
            dtype=self._dtype(xw),
        )
        return out

    def backward(
        self,
        fwd,
        h0,
        u,
        d_h_seq,
        d_h_last=None,
        d_gates=(None, None, None),
        mask=None,
        reset_after=True,
        path="auto",
        poison=False,
    ):
        torch = self.torch
        bsz, t, h = fwd["h_seq"].shape
        fill = float("nan") if poison else 0.0
        d_xw = torch.full((bsz, t, 3 * h), fill, dtype=h0.dtype, device=h0.device)
        d_h0 = torch.full((bsz, h), fill, dtype=h0.dtype, device=h0.device)
        v = self._view
        self.k.backward_cuda(
            v(h0),
            v(u),
            v(fwd["h_seq"]),
            v(fwd["update"]),
            v(fwd["reset"]),
            v(fwd["candidate"]),
            v(d_h_seq),
            v(d_xw),
            v(d_h0),
            mask=mask,
            hu_candidate=v(fwd.get("hu_candidate")),
            d_h_last=v(d_h_last),
            d_update=v(d_gates[0]),
            d_reset=v(d_gates[1]),
            d_candidate=v(d_gates[2]),
            reset_after=reset_after,
            stream=self.stream(),
            path=path,
            dtype=self._dtype(h0),
        )
        return d_xw, d_h0


def previous_states(torch, h_seq, h0, mask):
    """The state each step started from: h0 until a row's first unmasked step, then the
    previous output."""
    shifted = torch.cat([h0[:, None], h_seq[:, :-1]], dim=1)
    if mask is None:
        return shifted
    started = (torch.cumsum(mask.int(), dim=1) - mask.int()) > 0
    return torch.where(started[..., None], shifted, h0[:, None])


def weight_grads(torch, x, kernel, d_xw, fwd, h0, mask, reset_after):
    """Input/weight gradients from d_xw with large matmuls, the sums gategru/ops.py takes
    (there without a copy of the previous states)."""
    bsz, t, h3 = d_xw.shape
    h = h3 // 3
    flat = d_xw.reshape(-1, h3)
    d_x = (flat @ kernel.T).reshape(bsz, t, -1)
    d_kernel = x.reshape(bsz * t, -1).T @ flat
    d_b_in = flat.sum(0)
    h_prev = previous_states(torch, fwd["h_seq"], h0, mask).reshape(-1, h)
    if reset_after:
        d_hu = torch.cat([flat[:, : 2 * h], flat[:, 2 * h :] * fwd["reset"].reshape(-1, h)], dim=1)
        return d_x, d_kernel, d_b_in, h_prev.T @ d_hu, d_hu.sum(0)
    rh = fwd["reset"].reshape(-1, h) * h_prev
    d_u = torch.cat([h_prev.T @ flat[:, : 2 * h], rh.T @ flat[:, 2 * h :]], dim=1)
    return d_x, d_kernel, d_b_in, d_u, flat.sum(0)


def keras_from_torch(torch, gru):
    """torch.nn.GRU weights (gate rows r, z, n) as Keras's (columns z, r, h)."""

    def reorder(w):  # (3H, ...) rows r, z, n -> z, r, n
        r, z, n = w.chunk(3, 0)
        return torch.cat([z, r, n], 0)

    kernel = reorder(gru.weight_ih_l0.detach()).T.contiguous()
    recurrent = reorder(gru.weight_hh_l0.detach()).T.contiguous()
    return kernel, recurrent, reorder(gru.bias_ih_l0.detach()), reorder(gru.bias_hh_l0.detach())


def torch_grads_as_keras(torch, gru):
    def reorder(w):
        r, z, n = w.chunk(3, 0)
        return torch.cat([z, r, n], 0)

    return (
        reorder(gru.weight_ih_l0.grad).T,
        reorder(gru.weight_hh_l0.grad).T,
        reorder(gru.bias_ih_l0.grad),
        reorder(gru.bias_hh_l0.grad),
    )


def oracle_torch(torch, xw, h0, u, b, mask, reset_after):
    """The recurrence of gategru/reference.py in differentiable torch ops (float64)."""
    bsz, t, h3 = xw.shape
    h = h3 // 3
    state, prev = h0, torch.zeros_like(h0)
    outs, zs, rs, hcs = [], [], [], []
    for s in range(t):
        x = xw[:, s]
        if reset_after:
            hu = state @ u + b
            z = torch.sigmoid(x[:, :h] + hu[:, :h])
            r = torch.sigmoid(x[:, h : 2 * h] + hu[:, h : 2 * h])
            hc = torch.tanh(x[:, 2 * h :] + r * hu[:, 2 * h :])
        else:
            hu = state @ u[:, : 2 * h] + b[: 2 * h]
            z = torch.sigmoid(x[:, :h] + hu[:, :h])
            r = torch.sigmoid(x[:, h : 2 * h] + hu[:, h:])
            hc = torch.tanh(x[:, 2 * h :] + (r * state) @ u[:, 2 * h :] + b[2 * h :])
        new = z * state + (1 - z) * hc
        m = (
            torch.ones_like(new, dtype=torch.bool)
            if mask is None
            else mask[:, s, None].expand_as(new)
        )
        state = torch.where(m, new, state)
        prev = torch.where(m, new, prev)
        outs.append(prev)
        for lst, v in ((zs, z), (rs, r), (hcs, hc)):
            lst.append(torch.where(m, v, torch.zeros_like(v)))
    st = lambda lst: torch.stack(lst, 1)  # noqa: E731
    return st(outs), state, st(zs), st(rs), st(hcs)


def random_mask(torch, rng, bsz, t, device):
    mask = torch.rand(bsz, t, generator=rng, device="cpu") > 0.35
    if bsz > 1:
        mask[1] = False
    if bsz > 2:
        mask[2, : max(1, t // 2)] = False
    return mask.to(device)


def max_err(torch, got, ref):
    got, ref = got.double().cpu(), ref.double().cpu()
    if torch.isnan(got).any():
        return float("inf"), float(ref.abs().max()) if ref.numel() else 0.0
    return float((got - ref).abs().max()) if got.numel() else 0.0, float(
        ref.abs().max()
    ) if ref.numel() else 0.0
