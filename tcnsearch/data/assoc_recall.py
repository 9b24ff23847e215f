"""Associative recall (H3, Hyena): recall the value bound to a key earlier in the sequence.

The vocabulary is split into keys (the first half) and values (the rest). Each sequence draws a
fresh random key -> value mapping, lists key-value pairs under it, and ends with a query key that
appeared in the pairs; the model must output that key's value at the last position. Only that
position is scored (every other target is IGNORE), so chance is 1 / (number of values).

    k3 v7 k1 v2 k3 v7 k5 v0 ... k1   ->  answer v2
"""

from __future__ import annotations

import torch

IGNORE = -100


def associative_recall(num_examples: int, seq_len: int = 64, vocab_size: int = 20,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (num_examples, seq_len) int64; targets are IGNORE but at the end.

    Raises:
        ValueError: seq_len < 3, or a vocabulary too small for two keys and as many values.
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 (a pair and a query), got {seq_len}")
    if vocab_size < 4:
        raise ValueError(f"vocab_size must be >= 4, got {vocab_size}")
    n_keys = vocab_size // 2
    n_values = vocab_size - n_keys
    g = torch.Generator().manual_seed(seed)
    n_pairs = (seq_len - 1) // 2
    # A random injective key -> value mapping per sequence (n_values >= n_keys).
    mapping = torch.argsort(torch.rand(num_examples, n_values, generator=g), dim=1)[:, :n_keys]
    keys = torch.randint(0, n_keys, (num_examples, n_pairs), generator=g)
    values = mapping.gather(1, keys) + n_keys
    pairs = torch.stack([keys, values], dim=2).view(num_examples, 2 * n_pairs)
    pick = torch.randint(0, n_pairs, (num_examples, 1), generator=g)
    query, answer = keys.gather(1, pick), values.gather(1, pick)
    lead = torch.randint(0, n_keys, (num_examples, seq_len - 1 - 2 * n_pairs), generator=g)  # even lengths
    inputs = torch.cat([lead, pairs, query], dim=1)
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1:] = answer
    return inputs, targets
