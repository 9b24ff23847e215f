"""The TCN structure (K, f, D, B): the one type every part of tcnsearch names a TCN by.

    s = Structure(kernel_size=5, dilation_factor=4, depth=3, per_block=1)
    s.label                     # "K5-f4-D3-B1": tables, trial attributes, reports, the dashboard
    Structure.parse(s.label)    # == s
    s.receptive_field           # 1 + B*(K-1)*(f**D - 1)/(f - 1) = 85
    s.as_params()               # {"K": 5, "f": 4, "D": 3, "B": 1}: a study's sampler parameters

The profile's candidates, the model's TCN config, the search space, a study's survivors and
every table and report go through it, so the label a user reads in the CLI is the one they find
in the dashboard and can pass back to `--enqueue`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tcnsearch.ops import receptive_field

# (sampler parameter, field) for each axis, in the order the label lists them.
AXES = (("K", "kernel_size"), ("f", "dilation_factor"), ("D", "depth"), ("B", "per_block"))
_LABEL = re.compile(r"K(\d+)-f(\d+)-D(\d+)-B(\d+)")

Mode = Literal["train", "infer"]
Metric = Literal["fwd", "fwdbwd"]


@dataclass(frozen=True, order=True)
class Structure:
    """One TCN structure: kernel size K, dilation factor f, depth D, convolutions per block B."""

    kernel_size: int
    dilation_factor: int
    depth: int
    per_block: int = 1

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.kernel_size, self.dilation_factor, self.depth, self.per_block)

    @property
    def label(self) -> str:
        return f"K{self.kernel_size}-f{self.dilation_factor}-D{self.depth}-B{self.per_block}"

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, label: str) -> Structure:
        """The structure a label names ("K5-f4-D3-B1").

        Raises:
            ValueError: not such a label.
        """
        match = _LABEL.fullmatch(label.strip())
        if match is None:
            raise ValueError(f"{label[:40]!r} is not a TCN structure; write it as K5-f4-D3-B1")
        return cls(*(int(v) for v in match.groups()))

    def as_dict(self) -> dict[str, int]:
        """The four fields by name (kernel_size, ...): the model's `tcn` config section."""
        return {key: getattr(self, key) for _, key in AXES}

    def as_params(self) -> dict[str, int]:
        """The sampler's parameters that propose exactly this structure: {"K": 5, "f": 4, "D": 3, "B": 1}."""
        return {name: getattr(self, key) for name, key in AXES}

    @classmethod
    def of(cls, doc: dict) -> Structure:
        """The structure in a mapping with the four fields (a profile row, a TCN config, a record)."""
        return cls(*(int(doc[key]) for _, key in AXES))


def metric_of(mode: Mode) -> Metric:
    """What "faster" means in a profiling mode: forward+backward for training, forward for inference."""
    return "fwdbwd" if mode == "train" else "fwd"
