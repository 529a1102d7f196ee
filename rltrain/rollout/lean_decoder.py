"""A lean KV-cached decoder for Llama/Qwen3-style models, used by the hf backend when it applies.

Per token, transformers + peft run dozens of module calls (norms, rotary, cache bookkeeping, and the
LoRA wrapper of every projection) whose Python overhead dominates small models. Here the current
adapter is merged into fused weights once per `generate` (q|k|v and gate|up each one matmul), the
KV cache is preallocated, and each distinct prompt is prefilled once for its whole group. Measured on
the tiny model: 8 x 32 tokens 85 ms -> 38 ms; logprobs within 2e-5 of the transformers forward (the
trainer recomputes them anyway, and mismatch correction covers the rest).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rltrain.rollout.decode import Pick, decode_loop

SUPPORTED_TYPES = ("llama", "qwen3")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _merged(module: Any) -> Tensor:
    """A linear layer's weight with its (single, active) LoRA delta merged in, in the base weight's dtype.

    peft keeps LoRA factors in fp32 next to a bf16 base: the delta is summed in fp32, then rounded once.
    """
    if not hasattr(module, "lora_A"):
        return module.weight
    base = module.base_layer.weight
    w = base.float()
    for name in module.active_adapters:
        if name in module.lora_A:
            delta = module.lora_B[name].weight.float() @ module.lora_A[name].weight.float()  # [out, in]
            w = w + delta * module.scaling[name]
    return w.to(base.dtype)


def lean_supported(model: Any) -> bool:
    """Plain Llama/Qwen3 decoders with (optional) LoRA on linear projections only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    if (
        cfg.model_type not in SUPPORTED_TYPES
        or getattr(cfg, "attention_bias", False)
        or getattr(cfg, "mlp_bias", False)
    ):
        return False
    peft_cfg = getattr(model, "peft_config", {}).get("default")
    if peft_cfg is not None and (
        getattr(peft_cfg, "use_dora", False) or getattr(peft_cfg, "target_parameters", None)
    ):
        return False
    for name, module in base.named_modules():
        if hasattr(module, "lora_A") and name.split(".")[-1] not in PROJECTIONS:
            return False  # e.g. LoRA on lm_head or embeddings: not merged here
    return True


class LeanDecoder:
    @torch.no_grad()
    def __init__(self, model: Any) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        c = base.config
        self.nh, self.nkv, self.hd, self.eps = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.rms_norm_eps,
        )
        rot = base.model.rotary_emb  # its inv_freq already carries any rope scaling (llama3, yarn, ...)
        self.inv_freq, self.rope_scale = rot.inv_freq.float(), float(getattr(rot, "attention_scaling", 1.0))
        self.embed, self.norm, self.lm_head = (
            base.model.embed_tokens.weight,
            base.model.norm.weight,
            base.lm_head.weight,
        )
        self.inter = c.intermediate_size
        self.layers = []
        for layer in base.model.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(
                {
                    "ln1": layer.input_layernorm.weight,
                    "ln2": layer.post_attention_layernorm.weight,
                    "qkv": torch.cat([_merged(a.q_proj), _merged(a.k_proj), _merged(a.v_proj)])
                    .t()
                    .contiguous(),
                    "o": _merged(a.o_proj).t().contiguous(),
                    "gu": torch.cat([_merged(m.gate_proj), _merged(m.up_proj)]).t().contiguous(),
                    "down": _merged(m.down_proj).t().contiguous(),
                    "qn": getattr(getattr(a, "q_norm", None), "weight", None),
                    "kn": getattr(getattr(a, "k_norm", None), "weight", None),
                }
            )

    def _rms(self, x: Tensor, w: Tensor) -> Tensor:
        # statistics in fp32, as transformers' RMSNorm: a bf16 mean of squares loses the small ones
        h = x.float()
        return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    @staticmethod
    def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # x [B, h, T, d]
        x1, x2 = x.chunk(2, -1)
        return x * cos + torch.cat((-x2, x1), -1) * sin

    def forward(
        self, ids: Tensor, pos: Tensor, cache: list[tuple[Tensor, Tensor]], start: int, mask: Tensor
    ) -> Tensor:
        """ids [B, T] at positions pos [B, T]; writes K/V at [start, start+T); mask [B|1, 1, T, S] (bool).

        Returns the last position's logits, [B, V].
        """
        b, t = ids.shape
        x = self.embed[ids]  # [B, T, H]
        freqs = pos[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), -1)[:, None]  # [B, 1, T, d]
        # computed in fp32, applied in the model's dtype (as transformers' rotary embedding does)
        cos, sin = (emb.cos() * self.rope_scale).to(x.dtype), (emb.sin() * self.rope_scale).to(x.dtype)
        nq, nk, end = self.nh * self.hd, self.nkv * self.hd, start + t
        for layer, (kc, vc) in zip(self.layers, cache, strict=True):
            h = self._rms(x, layer["ln1"])
            q, k, v = (h @ layer["qkv"]).split((nq, nk, nk), -1)
            q, k = q.view(b, t, self.nh, self.hd), k.view(b, t, self.nkv, self.hd)
            if layer["qn"] is not None:
                q, k = self._rms(q, layer["qn"]), self._rms(k, layer["kn"])
            q = self._rope(q.transpose(1, 2), cos, sin)
            kc[:, :, start:end] = self._rope(k.transpose(1, 2), cos, sin)
            vc[:, :, start:end] = v.view(b, t, self.nkv, self.hd).transpose(1, 2)
            att = F.scaled_dot_product_attention(
                q, kc[:, :, :end], vc[:, :, :end], attn_mask=mask, enable_gqa=True
            )
            x = x + att.transpose(1, 2).reshape(b, t, nq) @ layer["o"]
            h = self._rms(x, layer["ln2"])
            g, u = (h @ layer["gu"]).split((self.inter, self.inter), -1)
            x = x + (F.silu(g) * u) @ layer["down"]
        return self._rms(x[:, -1], self.norm) @ self.lm_head.t()

    def _cache(self, b: int, s: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        shape = (b, self.nkv, s, self.hd)
        return [(like.new_empty(shape), like.new_empty(shape)) for _ in self.layers]

    def _prefill(self, ids: Tensor, valid: Tensor, s: int) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Prefill each distinct prompt once, then give every row its prompt's logits and K/V."""
        p = ids.shape[1]
        keyed = torch.cat([ids, valid[:, :p].long()], 1)  # padding is part of a prompt's identity
        uniq_keyed, row_of = torch.unique(keyed, dim=0, return_inverse=True)  # [U, 2P], [B]
        uniq, uvalid = uniq_keyed[:, :p], uniq_keyed[:, p:].bool()
        pos = (uvalid.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(p, p, dtype=torch.bool, device=ids.device).tril()
        # fully padded query rows attend to themselves only: no all-masked softmax (NaN)
        mask = ((causal[None] & uvalid[:, None, :]) | torch.eye(p, dtype=torch.bool, device=ids.device))[
            :, None
        ]
        cache = self._cache(uniq.shape[0], s, self.embed)
        logits = self.forward(uniq, pos, cache, 0, mask)
        return logits[row_of], [(k[row_of], v[row_of]) for k, v in cache]

    @torch.no_grad()
    def sample(
        self,
        ids: Tensor,
        valid: Tensor,
        max_tokens: int,
        stop: Tensor,
        pick: Pick,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ids [B, P] left-padded, valid [B, P + T]: tokens and logprobs [B, T], lengths and done [B]."""
        p = ids.shape[1]
        logits, cache = self._prefill(ids, valid, p + max_tokens)
        first_pos = valid[:, :p].long().sum(-1, keepdim=True)  # [B, 1]: left padding takes no position

        def step(tok: Tensor, t: int) -> Tensor:
            mask = valid[:, None, None, : p + t + 1]  # [B, 1, 1, S]
            return self.forward(tok[:, None], first_pos + t, cache, p + t, mask)

        return decode_loop(logits, step, pick, stop, max_tokens)
