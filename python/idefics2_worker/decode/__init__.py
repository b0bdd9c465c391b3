"""The fast decoder: continuous batching over KV-cache slots, prefill, the decode step, graph capture, the
capturable quantized linears and teacher-forced logits for parity checks."""
