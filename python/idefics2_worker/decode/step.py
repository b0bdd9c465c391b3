"""One decode step of the text model for a batch of rows, each reading and writing its own KV-cache slot.

The step is the text model's own computation, module by module (the same norms, projections, rotary embedding
and MLP modules, so the same bitsandbytes kernels), with two changes that do not change the function: the KV
cache is preallocated per slot (`KVSlots`), with attention masked to each sequence's own positions, and the
query heads sharing a KV head are attended as one group instead of repeating K and V.

On CUDA with Triton (or when `kernels` is forced, as the CPU tests do under Triton's interpreter), the work
between the projections runs as a few fused kernels (`kernels.step_kernels`), the quantized projections as
the worker's own kernels (`DecodeLinears`), each rounding where the module code rounds, and the projections that
read the same input as one product (`FusedProjection`: q/k/v, gate/up).

Deterministic (`deterministic=True`): each row's logits are the same bits whatever the other rows are, how many
there are, and how long the cache is, so a request's tokens do not depend on what shares its batch. That needs the
fused step (its norms, rotary and SiLU kernels work one row at a time), the linears' invariant forms
(`DecodeLinears`), and attention in a fixed order over the row's own positions (`batch_invariant_attention`)
instead of SDPA, whose kernel and KV splits depend on the batch and the cache length.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.functional import scaled_dot_product_attention

from ..kernels import batch_invariant_attention, batch_invariant_matmul, step_kernels, triton_support
from ..protocol.errors import WorkerError
from .fused_projections import FusedProjection
from .kv_slots import KVSlots
from .linears import DecodeLinears, QuantizedInput


def _norms_in_order(text: Any) -> list[Any]:
    """Every RMSNorm in the order the step applies them: each layer's two, then the final one."""
    norms = [n for layer in text.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    return [*norms, text.norm]


def lm_head_logits(head: Any, rows: torch.Tensor) -> torch.Tensor:
    """float32 logits [n, vocab] of the final norm's rows [n, D], contiguous. Where the worker's Triton kernels run, a
    plain bf16 / fp16 head runs the batch-invariant matmul at its own tiling, deterministic or not: the head took 0.063
    ms a token where cuBLAS's gemv took 0.094, and the captured 4-bit step 2.177 ms at one row against 2.202 (H65).
    Elsewhere, and for other heads, the head's own forward (batch-invariant when deterministic)."""
    plain = type(head) is torch.nn.Linear and head.bias is None and head.weight.dtype in (torch.bfloat16, torch.float16)
    if plain and triton_support.available(rows.device):
        return batch_invariant_matmul.linear(rows, head.weight, tiling=batch_invariant_matmul.HEAD_TILING).to(
            torch.float32
        )
    return head(rows).float().contiguous()


def _fusable(text: Any, norms: list[Any]) -> bool:
    """Whether the layers are the Mistral ones the fused kernels reproduce (RMSNorm, SiLU MLP, default rotary)."""
    return (
        getattr(text.config, "hidden_act", None) == "silu"
        and all(step_kernels.computes_norm(norm) for norm in norms)
        and all(hasattr(layer.mlp, name) for layer in text.layers for name in ("gate_proj", "up_proj", "down_proj"))
    )


class DecodeStep:
    """`decode_one_token(cache, tokens, positions, size)`: float32 logits [size, vocab] for rows 0..size-1."""

    def __init__(self, model: Any, max_batch: int, kernels: bool | None = None, deterministic: bool = False) -> None:
        text = model.model.text_model
        config = text.config
        device = model.device
        self.model = model
        self.text = text
        first = text.layers[0].self_attn
        self.head_dim = int(first.head_dim)
        self.kv_heads = int(config.num_key_value_heads)
        self.heads = int(config.num_attention_heads)
        self.scaling = float(first.scaling)
        self._rotary: Callable[..., Any] = sys.modules[type(first).__module__].apply_rotary_pos_emb
        if kernels is None:
            kernels = triton_support.available(device)
        self.linears = DecodeLinears(model, kernels, deterministic)
        self._norms = _norms_in_order(text)
        self.fused = kernels and _fusable(text, self._norms)
        self.deterministic = deterministic
        # The fixed-order attention reads each row's own positions only, where SDPA reads the whole preallocated
        # cache under a mask: on an H200 bf16 decode went from 150.6 to 176.9 tok/s at batch 1 with parity kept
        # (BENCHMARKS 2026-12-01, change 7), so on CUDA it is the fused step's attention, deterministic or not.
        self.own_positions_attention = self.fused and (deterministic or device.type == "cuda")
        if deterministic and not self.fused:
            raise WorkerError(
                "INVALID_OPTIONS",
                "deterministic decoding needs the fast decoder's Triton kernels (a CUDA GPU of compute capability "
                "8.0 or newer, with Triton) and a Mistral text model, which this model or device does not have",
                "Leave `deterministic` off, or use decoder 'reference' (generate(), one request at a time).",
            )
        # The fused step's q/k/v and gate/up products, one each per layer where the layers' linears allow it.
        self._qkv: list[FusedProjection | None] = []
        self._gate_up: list[FusedProjection | None] = []
        pack_dtype = self.linears.pack_dtype
        if self.fused:
            for layer in text.layers:
                attn, mlp = layer.self_attn, layer.mlp
                qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
                self._qkv.append(FusedProjection.of(qkv, deterministic, pack_dtype))
                self._gate_up.append(FusedProjection.of([mlp.gate_proj, mlp.up_proj], deterministic, pack_dtype))
        self.linears.pack_four_bit()  # the 4-bit layers no group packed
        self.rows = torch.arange(max_batch, device=device)
        # Index and value tensors on the device: a graph cannot capture a host-to-device copy.
        self._zeros = torch.zeros(max_batch, dtype=torch.long, device=device)
        self._true = torch.ones((), dtype=torch.bool, device=device)

    def decode_one_token(
        self, cache: KVSlots, tokens: torch.Tensor, positions: torch.Tensor, size: int
    ) -> torch.Tensor:
        if self.fused:
            return self._fused_step(cache, tokens, positions, size)
        text = self.text
        hidden, cos, sin, mask = self._embed(cache, tokens, positions, size)
        with self.linears.capturable():
            for index, layer in enumerate(text.layers):
                residual = hidden
                hidden = layer.input_layernorm(hidden)
                hidden = self._attention(cache, layer.self_attn, index, hidden, (cos, sin), positions[:size], mask)
                hidden = residual + hidden
                residual = hidden
                hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
            hidden = text.norm(hidden)
            return self.model.lm_head(hidden[:, 0]).float()

    def _embed(
        self, cache: KVSlots, tokens: torch.Tensor, positions: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Opens each row's mask at its position; the rows' token embeddings, rotary cos / sin, and mask."""
        rows, positions = self.rows[:size], positions[:size]
        zeros = self._zeros[:size]
        cache.mask.index_put_((rows, zeros, zeros, positions), self._true)
        hidden = self.text.embed_tokens(tokens[:size, None])
        cos, sin = self.text.rotary_emb(hidden, positions[:, None])
        return hidden, cos, sin, cache.mask[:size]

    def _attention(  # noqa: PLR0917 - the step's state, passed rather than kept
        self,
        cache: KVSlots,
        attn: Any,
        index: int,
        hidden: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        positions: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        size, dim = hidden.shape[0], self.head_dim
        rows = self.rows[:size]
        query = attn.q_proj(hidden).view(size, 1, self.heads, dim).transpose(1, 2)
        key = attn.k_proj(hidden).view(size, 1, self.kv_heads, dim).transpose(1, 2)
        value = attn.v_proj(hidden).view(size, 1, self.kv_heads, dim).transpose(1, 2)
        query, key = self._rotary(query, key, *rotary)
        cache.keys[index][rows, :, positions] = key[:, :, 0]
        cache.values[index][rows, :, positions] = value[:, :, 0]
        return self._attend(cache, attn, index, query, mask, positions)

    def _attend(  # noqa: PLR0917 - the step's state, passed rather than kept
        self, cache: KVSlots, attn: Any, index: int, query: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Attention over each row's cache slot and the output projection; query holds [rows, heads, (1,) dim]."""
        return attn.o_proj(self._attended(cache, index, query, mask, positions))

    def _attended(
        self, cache: KVSlots, index: int, query: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Attention over each row's cache slot, before the output projection: [rows, 1, heads · dim]."""
        size, dim = query.shape[0], self.head_dim
        # Query head h uses KV head h // groups (transformers' repeat_kv), so the heads of one KV head
        # are a contiguous group: attend them as a group of queries at the same position.
        grouped = query.reshape(size, self.kv_heads, self.heads // self.kv_heads, dim)
        if self.own_positions_attention:
            out = batch_invariant_attention.decode_attention(
                grouped, cache.keys[index], cache.values[index], mask, positions, self.scaling
            )
        else:
            keys, values = cache.keys[index][:size], cache.values[index][:size]
            out = scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=self.scaling)
        return out.reshape(size, 1, self.heads * dim)

    def _fused_step(self, cache: KVSlots, tokens: torch.Tensor, positions: torch.Tensor, size: int) -> torch.Tensor:
        # The same computation as the module step; each residual add is fused with the norm that follows it.
        text = self.text
        hidden, cos, sin, mask = self._embed(cache, tokens, positions, size)
        positions = positions[:size]
        norms = self._norms
        layers = len(text.layers)
        residual, normed, quantized = self._add_norm(hidden, None, norms[0], self._qkv[0])
        with self.linears.capturable():
            for index, layer in enumerate(text.layers):
                attn = layer.self_attn
                qkv = self._qkv[index]
                if qkv is not None:
                    query, key, value = qkv(normed, quantized)
                else:
                    query, key, value = attn.q_proj(normed), attn.k_proj(normed), attn.v_proj(normed)
                query = step_kernels.rotary_into_cache(
                    query, key, value, cos, sin, cache.keys[index], cache.values[index], positions
                )
                # Where o's and down's K is split, their partial sums are added by the add + norm after them.
                out = self.linears.split_product(attn.o_proj, self._attended(cache, index, query, mask, positions))
                gate_up = self._gate_up[index]
                residual, normed, quantized = self._add_norm(residual, out, norms[2 * index + 1], gate_up)
                mlp = layer.mlp
                if gate_up is not None:
                    gate, up = gate_up(normed, quantized)
                else:
                    gate, up = mlp.gate_proj(normed), mlp.up_proj(normed)
                out = self.linears.split_product(mlp.down_proj, step_kernels.silu_mul(gate, up))
                following = self._qkv[index + 1] if index + 1 < layers else None
                residual, normed, quantized = self._add_norm(residual, out, norms[2 * index + 2], following)
            return lm_head_logits(self.model.lm_head, normed[:, 0])

    @staticmethod
    def _add_norm(
        residual: torch.Tensor,
        delta: torch.Tensor | batch_invariant_matmul.SplitSums | None,
        norm: Any,
        reader: FusedProjection | None,
    ) -> tuple[torch.Tensor, torch.Tensor, QuantizedInput | None]:
        """residual (+ delta) and its norm; when the projection that reads the norm is an int8 group, the norm's
        quantised form too, made in the same launch (one kernel fewer per group: 64 of an 8-bit step's ~460)."""
        eps = norm.variance_epsilon
        if reader is None or reader.eight_bit is None:
            return (*step_kernels.add_rms_norm(residual, delta, norm.weight, eps), None)
        if isinstance(delta, batch_invariant_matmul.SplitSums):
            delta = batch_invariant_matmul.summed(delta)
        group = reader.eight_bit
        hidden, normed, rows = step_kernels.add_rms_norm_quantized(
            residual, delta, norm.weight, eps, group.threshold, group.row_invariant
        )
        return hidden, normed, QuantizedInput.from_rows(rows)
