"""The names users choose from, in one place: the CLI's choices, the configs' literals and the checks use these.

Kept free of heavy imports, so that `tcnsearch --help` and a bad flag answer at once.
"""

TASKS = ("assoc-recall", "enwik8", "lra-listops", "lra-text", "lra-retrieval", "lra-image", "lra-pathfinder",
         "lra-pathx")
PRESET_NAMES = ("tiny", "cpu", "paper")
SAMPLERS = ("gp", "tpe", "random", "nsga2", "grid")
LEVELS = ("op", "layer", "model")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# --gpu name -> the model's marketing name (as in Ray's accelerator types and CUDA device names).
GPU_MODELS = {
    "v100": "V100", "a100": "A100", "h100": "H100", "h200": "H200", "b200": "B200", "l4": "L4",
    "l40s": "L40S", "t4": "T4", "a10g": "A10G", "p100": "P100",
}
GPUS = ("auto", "cpu", *GPU_MODELS)
